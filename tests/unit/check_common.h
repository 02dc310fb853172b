/*
 * check_common.h - shared scaffolding for the Check unit tests.
 *
 * Each tests/unit/check_<module>.c defines one suite per module and ends
 * with CHECK_MAIN(<module>_suite). The test binary runs from the top of
 * the source tree (tests/run-all.sh does the cd), honours CK_* environment
 * variables (CK_TAP_LOG_FILE_NAME, CK_XML_LOG_FILE_NAME, CK_RUN_CASE...)
 * and exits non-zero when a check fails.
 *
 * Helpers: test_tmpdir() gives a fresh directory per test binary;
 * SHARED_DATA is the path of ../shared/data when present (tests that need
 * it skip themselves, loudly, when it is absent).
 */
#ifndef CHECK_COMMON_H
#define CHECK_COMMON_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

static inline const char *test_tmpdir(void)
{
	static char dir[256];
	if (!dir[0]) {
		const char *base = getenv("TMPDIR");
		snprintf(dir, sizeof dir, "%s/gpt-check-XXXXXX", base ? base : "/tmp");
		if (!mkdtemp(dir)) {
			perror("mkdtemp");
			exit(1);
		}
	}
	return dir;
}

/* Path under the per-binary temporary directory. */
static inline const char *test_path(const char *name)
{
	static char buf[8][512];
	static int k;
	k = (k + 1) % 8;
	snprintf(buf[k], sizeof buf[k], "%s/%s", test_tmpdir(), name);
	return buf[k];
}

static inline const char *shared_data(void)
{
	const char *p = getenv("GPT_SHARED_DATA");
	if (p)
		return p;
	return access("../shared/data/README.md", R_OK) == 0 ? "../shared/data" : NULL;
}

#define CHECK_MAIN(suite_fn)                                                   \
	int main(int argc, char **argv)                                        \
	{                                                                      \
		util_init(argv[0]);                                            \
		test_tmpdir(); /* before the fork: one directory, removed below */ \
		Suite *s = suite_fn();                                         \
		SRunner *sr = srunner_create(s);                               \
		srunner_run_all(sr, CK_NORMAL);                                \
		int failed = srunner_ntests_failed(sr);                        \
		srunner_free(sr);                                              \
		char cmd[300];                                                 \
		snprintf(cmd, sizeof cmd, "rm -rf '%s'", test_tmpdir());       \
		if (system(cmd)) {                                             \
		}                                                              \
		return failed ? 1 : 0;                                         \
	}

#endif
