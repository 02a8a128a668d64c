// unwind_check.cc - see unwind_check.h.
//
// The formats read here are those of the Itanium C++ ABI's exception
// handling as GCC and Clang emit it on ELF targets:
//   - .eh_frame: a CIE per group of functions (with the personality routine
//     in its "zPLR" augmentation) and an FDE per function, found by the
//     unwinder's _Unwind_Find_FDE();
//   - the LSDA of a C++ function (.gcc_except_table), which the C++
//     personality routine __gxx_personality_v0 reads:
//       u8   LPStart encoding, [LPStart]      (omitted: the function's start)
//       u8   TType encoding, [uleb128 offset] (from just after the offset to
//                                              the end of the type table)
//       u8   call-site encoding
//       uleb128 length of the call-site table
//       call sites, sorted by start: {start, length, landing pad} in the
//         call-site encoding (offsets from the function's start, the landing
//         pad from LPStart, 0 for none) and uleb128 action (0: cleanup
//         only, else 1 + the offset of its first action record)
//       action records: sleb128 type filter (> 0: a catch clause, index
//         into the type table counted backwards from its end, whose entry 0
//         means catch (...); < 0: an exception specification; 0: cleanup),
//         sleb128 offset from this field to the next record (0: last)
//       type table (entries in the TType encoding, read backwards)
// Only what the check needs is decoded; anything unexpected makes the frame
// pass (the check then errs towards letting the unwind go ahead, as before).
#include "job/unwind_check.h"

#include <dlfcn.h>
#include <link.h>
#include <unwind.h>

#include <cstring>
#include <exception>

// Not declared in <unwind.h>, but exported by every unwinder the toolchains
// ship (libgcc_s, libgcc_eh, LLVM libunwind): the FDE covering pc.
extern "C" {
struct asyncjob_dwarf_eh_bases {
  void* tbase;
  void* dbase;
  void* func;
};
const void* _Unwind_Find_FDE(void* pc, asyncjob_dwarf_eh_bases* bases);
_Unwind_Reason_Code __gxx_personality_v0(int, _Unwind_Action, _Unwind_Exception_Class,
                                         _Unwind_Exception*, _Unwind_Context*);
void* __cxa_begin_catch(void* exception) noexcept;
}

namespace asyncjob::job {
namespace {

// ----- Reading DWARF-encoded values -----

constexpr std::uint8_t kOmit = 0xff;
constexpr std::uint8_t kIndirect = 0x80;

// The 7-bit groups of a LEB128 number, low first; *shift ends as the
// number of bits read and *last as its last byte (for the sign).
std::uintptr_t ReadLeb128Bits(const std::uint8_t** p, unsigned* shift, std::uint8_t* last) {
  std::uintptr_t value = 0;
  *shift = 0;
  std::uint8_t byte;
  do {
    byte = *(*p)++;
    if (*shift < sizeof(value) * 8) value |= static_cast<std::uintptr_t>(byte & 0x7f) << *shift;
    *shift += 7;
  } while (byte & 0x80);
  *last = byte;
  return value;
}

std::uintptr_t ReadUleb128(const std::uint8_t** p) {
  unsigned shift;
  std::uint8_t last;
  return ReadLeb128Bits(p, &shift, &last);
}

std::intptr_t ReadSleb128(const std::uint8_t** p) {
  unsigned shift;
  std::uint8_t last;
  std::uintptr_t value = ReadLeb128Bits(p, &shift, &last);
  if (shift < sizeof(value) * 8 && (last & 0x40)) value |= ~std::uintptr_t{0} << shift;
  return static_cast<std::intptr_t>(value);
}

template <class T>
T ReadRaw(const std::uint8_t* p) {
  T value;
  std::memcpy(&value, p, sizeof value);
  return value;
}

// The size of a fixed-size encoding (0 for the LEB128 ones).
std::size_t EncodedSize(std::uint8_t encoding) {
  switch (encoding & 0x0f) {
    case 0x00:
      return sizeof(void*);  // absptr
    case 0x02:
    case 0x0a:
      return 2;  // udata2, sdata2
    case 0x03:
    case 0x0b:
      return 4;  // udata4, sdata4
    case 0x04:
    case 0x0c:
      return 8;  // udata8, sdata8
    default:
      return 0;
  }
}

// Bases for the relative encodings; what is unknown stays 0.
struct Bases {
  std::uintptr_t text = 0;
  std::uintptr_t data = 0;
  std::uintptr_t function = 0;
};

// Reads a value in `encoding` at *p and advances *p. false for an encoding
// the check does not know.
bool ReadEncoded(const std::uint8_t** p, std::uint8_t encoding, const Bases& bases,
                 std::uintptr_t* out) {
  const std::uint8_t* field = *p;
  std::uintptr_t value;
  switch (encoding & 0x0f) {
    case 0x00:
      value = ReadRaw<std::uintptr_t>(field);
      *p += sizeof(void*);
      break;
    case 0x01:
      value = ReadUleb128(p);
      break;
    case 0x02:
      value = ReadRaw<std::uint16_t>(field);
      *p += 2;
      break;
    case 0x03:
      value = ReadRaw<std::uint32_t>(field);
      *p += 4;
      break;
    case 0x04:
      value = static_cast<std::uintptr_t>(ReadRaw<std::uint64_t>(field));
      *p += 8;
      break;
    case 0x09:
      value = static_cast<std::uintptr_t>(ReadSleb128(p));
      break;
    case 0x0a:
      value = static_cast<std::uintptr_t>(ReadRaw<std::int16_t>(field));
      *p += 2;
      break;
    case 0x0b:
      value = static_cast<std::uintptr_t>(ReadRaw<std::int32_t>(field));
      *p += 4;
      break;
    case 0x0c:
      value = static_cast<std::uintptr_t>(ReadRaw<std::int64_t>(field));
      *p += 8;
      break;
    default:
      return false;
  }
  if (value != 0) {
    switch (encoding & 0x70) {
      case 0x00:
        break;  // absolute
      case 0x10:
        value += reinterpret_cast<std::uintptr_t>(field);
        break;  // pcrel
      case 0x20:
        value += bases.text;
        break;  // textrel
      case 0x30:
        value += bases.data;
        break;  // datarel
      case 0x40:
        value += bases.function;
        break;  // funcrel
      default:
        return false;
    }
    if (encoding & kIndirect) value = *reinterpret_cast<const std::uintptr_t*>(value);
  }
  *out = value;
  return true;
}

// ----- The frame's personality routine -----

// Whether the function containing pc uses the C++ personality routine
// (false for C built with -fexceptions, whose routine only runs cleanups,
// and for other languages). Reads the CIE of the FDE covering pc. Unknown
// layouts answer true: the LSDA is then read as C++'s.
bool HasCxxPersonality(std::uintptr_t pc) {
  asyncjob_dwarf_eh_bases eh_bases{};
  const auto* fde =
      static_cast<const std::uint8_t*>(_Unwind_Find_FDE(reinterpret_cast<void*>(pc), &eh_bases));
  if (fde == nullptr) return true;
  if (ReadRaw<std::uint32_t>(fde) == 0xffffffffu) return true;  // 64-bit DWARF: not emitted
  const std::uint8_t* cie_pointer_field = fde + 4;
  const std::uint8_t* cie = cie_pointer_field - ReadRaw<std::uint32_t>(cie_pointer_field);
  const std::uint8_t* p = cie + 8;  // past length and CIE id
  std::uint8_t version = *p++;
  const char* augmentation = reinterpret_cast<const char*>(p);
  p += std::strlen(augmentation) + 1;
  if (augmentation[0] != 'z') return true;
  ReadUleb128(&p);  // code alignment
  ReadSleb128(&p);  // data alignment
  if (version == 1) {
    ++p;  // return address register
  } else {
    ReadUleb128(&p);
  }
  ReadUleb128(&p);  // augmentation data length
  Bases bases{reinterpret_cast<std::uintptr_t>(eh_bases.tbase),
              reinterpret_cast<std::uintptr_t>(eh_bases.dbase), 0};
  for (const char* c = augmentation + 1; *c != '\0'; ++c) {
    if (*c == 'P') {
      std::uint8_t encoding = *p++;
      std::uintptr_t personality = 0;
      if (!ReadEncoded(&p, encoding, bases, &personality)) return true;
      if (personality == reinterpret_cast<std::uintptr_t>(&__gxx_personality_v0)) return true;
      // The same routine, linked into another object (-static-libstdc++).
      Dl_info info;
      return dladdr(reinterpret_cast<void*>(personality), &info) != 0 &&
             info.dli_sname != nullptr && std::strcmp(info.dli_sname, "__gxx_personality_v0") == 0;
    }
    if (*c == 'L' || *c == 'R') {
      ++p;
    } else if (*c != 'S' && *c != 'B' && *c != 'G') {
      return true;  // an augmentation we cannot skip
    }
  }
  return true;
}

// ----- Clang's noexcept: a catch (...) that calls terminate -----

// Whether [address, address + size) lies in an executable segment of a
// loaded object, so that its code may be read.
bool IsLoadedCode(std::uintptr_t address, std::size_t size) {
  struct Query {
    std::uintptr_t address;
    std::size_t size;
  } query{address, size};
  auto visit = [](dl_phdr_info* info, std::size_t, void* data) -> int {
    const auto* q = static_cast<const Query*>(data);
    for (int i = 0; i < info->dlpi_phnum; ++i) {
      const auto& header = info->dlpi_phdr[i];
      if (header.p_type != PT_LOAD || (header.p_flags & PF_X) == 0) continue;
      std::uintptr_t low = info->dlpi_addr + header.p_vaddr;
      std::uintptr_t high = low + header.p_memsz;
      if (q->address >= low && q->address <= high && q->size <= high - q->address) return 1;
    }
    return 0;
  };
  return dl_iterate_phdr(visit, &query) != 0;
}

#if defined(__x86_64__)
constexpr std::uint8_t kEndbr64[] = {0xf3, 0x0f, 0x1e, 0xfa};

// Skips an endbr64 at p, if any.
std::uintptr_t SkipEndbr(std::uintptr_t p) {
  if (IsLoadedCode(p, sizeof kEndbr64) &&
      std::memcmp(reinterpret_cast<const void*>(p), kEndbr64, sizeof kEndbr64) == 0) {
    return p + sizeof kEndbr64;
  }
  return p;
}

// Where the `call rel32` at p goes.
std::uintptr_t CallTarget(std::uintptr_t p) {
  return p + 5 +
         static_cast<std::uintptr_t>(static_cast<std::intptr_t>(
             ReadRaw<std::int32_t>(reinterpret_cast<const std::uint8_t*>(p + 1))));
}

// A PLT entry: `jmp *slot(%rip)`, possibly after endbr64 and a bnd prefix.
// A call to one is a call into another object (for a catch block, the
// runtime's __cxa_begin_catch).
bool IsPltEntry(std::uintptr_t target) {
  std::uintptr_t p = SkipEndbr(target);
  if (!IsLoadedCode(p, 3)) return false;
  const auto* code = reinterpret_cast<const std::uint8_t*>(p);
  if (code[0] == 0xf2) ++code;  // bnd
  return code[0] == 0xff && code[1] == 0x25;
}

// Clang's __clang_call_terminate, which every object Clang built carries a
// hidden copy of: `push %rax` (after an endbr64 with -fcf-protection), then,
// within a few instructions (ThreadSanitizer adds its entry hook), two
// consecutive calls: __cxa_begin_catch, then std::terminate, each directly
// or through the PLT.
bool IsClangTerminateHelper(std::uintptr_t target) {
  constexpr std::size_t kScan = 40;
  std::uintptr_t p = SkipEndbr(target);
  if (!IsLoadedCode(p, kScan)) return false;
  const auto* code = reinterpret_cast<const std::uint8_t*>(p);
  if (code[0] != 0x50) return false;
  auto calls = [](std::uintptr_t call, const void* function) {
    std::uintptr_t to = CallTarget(call);
    return to == reinterpret_cast<std::uintptr_t>(function) || IsPltEntry(to);
  };
  for (std::size_t i = 1; i + 10 <= kScan; ++i) {
    if (code[i] == 0xe8 && code[i + 5] == 0xe8 &&
        calls(p + i, reinterpret_cast<const void*>(&__cxa_begin_catch)) &&
        calls(p + i + 5, reinterpret_cast<const void*>(&std::terminate))) {
      return true;
    }
  }
  return false;
}

// Whether the landing pad of a catch (...) is Clang's terminate handler:
// its code runs the frame's cleanups (calls within the object) and then
// calls __clang_call_terminate, where a real catch block calls
// __cxa_begin_catch through the PLT. The bytes are scanned for call
// opcodes without decoding instructions; a stray 0xe8 inside another
// instruction names a target that fits neither pattern. Limits: a cleanup
// that calls into another shared object hides the helper (the unwind then
// terminates as before this check existed).
bool IsTerminateLandingPad(std::uintptr_t landing_pad) {
  constexpr std::size_t kScan = 96;
  std::size_t size = kScan;
  while (size > 5 && !IsLoadedCode(landing_pad, size)) size /= 2;
  if (size <= 5) return false;
  const auto* code = reinterpret_cast<const std::uint8_t*>(landing_pad);
  for (std::size_t i = 0; i + 5 <= size; ++i) {
    if (code[i] != 0xe8) continue;
    std::uintptr_t target = CallTarget(landing_pad + i);
    if (IsClangTerminateHelper(target)) return true;
    if (IsPltEntry(target)) return false;
  }
  return false;
}
#else
// Other architectures: Clang's terminate handler is not recognised.
bool IsTerminateLandingPad(std::uintptr_t) { return false; }
#endif

// ----- One frame -----

// What the C++ personality routine would do with an exception of a type
// nobody but catch (...) catches, thrown through the frame at pc.
UnwindBlocker ExamineFrame(_Unwind_Context* context, std::uintptr_t pc) {
  const auto* lsda = static_cast<const std::uint8_t*>(_Unwind_GetLanguageSpecificData(context));
  if (lsda == nullptr) return UnwindBlocker::kNone;  // no handlers, no cleanups
  if (!HasCxxPersonality(pc)) return UnwindBlocker::kNone;
  Bases bases{_Unwind_GetTextRelBase(context), _Unwind_GetDataRelBase(context),
              _Unwind_GetRegionStart(context)};
  const std::uintptr_t function = bases.function;

  const std::uint8_t* p = lsda;
  std::uintptr_t landing_pad_base = function;
  std::uint8_t lpstart_encoding = *p++;
  if (lpstart_encoding != kOmit && !ReadEncoded(&p, lpstart_encoding, bases, &landing_pad_base)) {
    return UnwindBlocker::kNone;
  }
  std::uint8_t ttype_encoding = *p++;
  const std::uint8_t* type_table_end = nullptr;
  if (ttype_encoding != kOmit) {
    std::uintptr_t offset = ReadUleb128(&p);
    type_table_end = p + offset;
  }
  std::uint8_t call_site_encoding = *p++;
  std::uintptr_t table_length = ReadUleb128(&p);
  const std::uint8_t* table_end = p + table_length;
  const std::uint8_t* action_table = table_end;
  Bases no_bases{};  // call-site fields are offsets

  while (p < table_end) {
    std::uintptr_t start = 0, length = 0, landing_pad = 0;
    if (!ReadEncoded(&p, call_site_encoding, no_bases, &start) ||
        !ReadEncoded(&p, call_site_encoding, no_bases, &length) ||
        !ReadEncoded(&p, call_site_encoding, no_bases, &landing_pad)) {
      return UnwindBlocker::kNone;
    }
    std::uintptr_t action = ReadUleb128(&p);
    if (pc < function + start) break;  // sorted: pc is in no entry
    if (pc >= function + start + length) continue;
    // pc's entry.
    if (landing_pad == 0 || action == 0) return UnwindBlocker::kNone;
    const std::uint8_t* record = action_table + action - 1;
    for (;;) {
      std::intptr_t filter = ReadSleb128(&record);
      const std::uint8_t* next_field = record;
      std::intptr_t next = ReadSleb128(&record);
      if (filter < 0) return UnwindBlocker::kExceptionSpecification;
      if (filter > 0) {
        std::size_t entry_size = EncodedSize(ttype_encoding);
        if (type_table_end == nullptr || entry_size == 0) return UnwindBlocker::kNone;
        const std::uint8_t* entry =
            type_table_end - static_cast<std::uintptr_t>(filter) * entry_size;
        std::uintptr_t type = 0;
        if (!ReadEncoded(&entry, ttype_encoding, bases, &type)) return UnwindBlocker::kNone;
        if (type == 0) {  // catch (...): assumed to rethrow, unless it terminates
          return IsTerminateLandingPad(landing_pad_base + landing_pad) ? UnwindBlocker::kNoexcept
                                                                       : UnwindBlocker::kNone;
        }
        // A typed catch clause: it does not catch the cancellation.
      }
      if (next == 0) break;
      record = next_field + next;
    }
    return UnwindBlocker::kNone;
  }
  // Not in the table: the personality routine calls std::terminate.
  return UnwindBlocker::kNoexcept;
}

// ----- The walk -----

struct Walk {
  std::uintptr_t stop_function;
  int frames_to_skip;
  UnwindCheck check;
  bool decided = false;
  std::uintptr_t last_pc = 0;
};

_Unwind_Reason_Code VisitFrame(_Unwind_Context* context, void* argument) {
  auto* walk = static_cast<Walk*>(argument);
  int before_instruction = 0;
  std::uintptr_t ip = _Unwind_GetIPInfo(context, &before_instruction);
  if (ip == 0) return _URC_END_OF_STACK;
  // A return address points after the call: step back into it, unless the
  // frame was interrupted by a signal (the address is then the instruction).
  std::uintptr_t pc = before_instruction ? ip : ip - 1;
  walk->last_pc = pc;
  if (walk->frames_to_skip > 0) {
    --walk->frames_to_skip;
    return _URC_NO_REASON;
  }
  if (_Unwind_GetRegionStart(context) == walk->stop_function) {
    walk->decided = true;  // reached: the check's answer stays kNone
    return _URC_END_OF_STACK;
  }
  ++walk->check.frames_walked;
  UnwindBlocker blocker = ExamineFrame(context, pc);
  if (blocker != UnwindBlocker::kNone) {
    walk->check.blocker = blocker;
    walk->check.frame = reinterpret_cast<const void*>(pc);
    walk->decided = true;
    return _URC_END_OF_STACK;
  }
  return _URC_NO_REASON;
}

}  // namespace

// Not inlined, so that its own frame is the first one the walk skips.
__attribute__((noinline)) UnwindCheck CheckUnwindTo(const void* stop_function, int frames_to_skip) {
  Walk walk{reinterpret_cast<std::uintptr_t>(stop_function), frames_to_skip + 1, {}};
  _Unwind_Backtrace(&VisitFrame, &walk);
  if (!walk.decided) {
    // The walk ended without reaching the stop frame: the unwinder found no
    // unwind information for the last frame it saw, or that frame was the
    // outermost one (its caller is unknown).
    asyncjob_dwarf_eh_bases bases{};
    walk.check.blocker = _Unwind_Find_FDE(reinterpret_cast<void*>(walk.last_pc), &bases) == nullptr
                             ? UnwindBlocker::kNoUnwindInfo
                             : UnwindBlocker::kStopFrameNotFound;
    walk.check.frame = reinterpret_cast<const void*>(walk.last_pc);
  }
  // Keeps the call above from being a tail call, which would drop this
  // frame from the walk.
  asm volatile("" ::: "memory");
  return walk.check;
}

const char* FunctionNameAt(const void* address, const void** start) {
  Dl_info info;
  void* symbol_entry = nullptr;
  int found = dladdr1(address, &info, &symbol_entry, RTLD_DL_SYMENT);
  const auto* symbol = static_cast<const ElfW(Sym)*>(symbol_entry);
  if (found == 0 || info.dli_sname == nullptr || symbol == nullptr) {
    return nullptr;
  }
  // dladdr names the nearest symbol below the address, which need not
  // contain it (the function may have no dynamic symbol of its own).
  auto low = reinterpret_cast<std::uintptr_t>(info.dli_saddr);
  auto at = reinterpret_cast<std::uintptr_t>(address);
  if (symbol->st_size != 0 && at - low >= symbol->st_size) return nullptr;
  if (start != nullptr) *start = info.dli_saddr;
  return info.dli_sname;
}

const char* DescribeBlocker(UnwindBlocker blocker) {
  switch (blocker) {
    case UnwindBlocker::kNone:
      return "none";
    case UnwindBlocker::kNoUnwindInfo:
      return "no unwind information";
    case UnwindBlocker::kNoexcept:
      return "a noexcept frame (a noexcept function or a destructor)";
    case UnwindBlocker::kExceptionSpecification:
      return "an exception specification";
    case UnwindBlocker::kStopFrameNotFound:
      return "the walk did not reach the job's entry";
  }
  return "?";
}

}  // namespace asyncjob::job
