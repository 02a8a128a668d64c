/* no_unwind_tables.h - see no_unwind_tables.c. */
#ifndef ASYNCJOB_TESTS_JOB_NO_UNWIND_TABLES_H_
#define ASYNCJOB_TESTS_JOB_NO_UNWIND_TABLES_H_

#ifdef __cplusplus
extern "C" {
#endif

/* Returns callback(argument) + 1, from a frame without unwind information. */
int CallWithoutUnwindTables(int (*callback)(void *), void *argument);

#ifdef __cplusplus
}
#endif

#endif /* ASYNCJOB_TESTS_JOB_NO_UNWIND_TABLES_H_ */
