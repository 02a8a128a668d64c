# cmake -DLIBRARY=<libasyncjob.so.X.Y.Z> -DVERSION=<upstream version>
#       -DOUTPUT=<file> -DGENSYMBOLS=<dpkg-gensymbols> -P symbols.cmake
#
# Writes libasyncjob0's symbols file: every symbol the library exports, with
# its version node, as available since VERSION, and the package whose
# version a program built against it gets when the minimum is computed
# (Build-Depends-Package).
execute_process(
  COMMAND ${GENSYMBOLS} -q -plibasyncjob0 -v${VERSION} -e${LIBRARY} -O${OUTPUT}.tmp
  RESULT_VARIABLE _result)
if(NOT _result EQUAL 0)
  message(FATAL_ERROR "dpkg-gensymbols failed on ${LIBRARY}")
endif()
file(STRINGS ${OUTPUT}.tmp _lines)
list(POP_FRONT _lines _header)
list(PREPEND _lines "* Build-Depends-Package: libasyncjob-dev")
list(PREPEND _lines "${_header}")
list(JOIN _lines "\n" _text)
file(WRITE ${OUTPUT} "${_text}\n")
file(REMOVE ${OUTPUT}.tmp)
