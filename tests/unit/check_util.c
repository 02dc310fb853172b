/* check_util.c - atomic outputs, number parsing, bf16 rounding. */
#include <math.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "check_common.h"

START_TEST(atomic_commit_and_abort)
{
	const char *p = test_path("out.bin");
	struct aout o;
	aout_open(&o, p, AOUT_BINARY);
	ck_assert_int_ne(access(p, F_OK), 0); /* nothing under the final name yet */
	aout_write(&o, "hello", 5);
	aout_commit(&o);
	struct stat st;
	ck_assert_int_eq(stat(p, &st), 0);
	ck_assert_int_eq(st.st_size, 5);
	/* an aborted rewrite leaves the old file and no temporary */
	aout_open(&o, p, AOUT_BINARY);
	aout_write(&o, "xx", 2);
	aout_abort(&o);
	ck_assert_int_eq(stat(p, &st), 0);
	ck_assert_int_eq(st.st_size, 5);
	char cmd[600];
	snprintf(cmd, sizeof cmd, "test $(ls -A '%s' | wc -l) -eq 1", test_tmpdir());
	ck_assert_int_eq(system(cmd), 0);
}
END_TEST

START_TEST(device_written_in_place)
{
	struct stat before, after;
	ck_assert_int_eq(stat("/dev/null", &before), 0);
	struct aout o;
	aout_open(&o, "/dev/null", AOUT_BINARY);
	aout_write(&o, "data", 4);
	aout_commit(&o);
	ck_assert_int_eq(stat("/dev/null", &after), 0);
	ck_assert(S_ISCHR(after.st_mode));
	ck_assert(before.st_rdev == after.st_rdev);
}
END_TEST

START_TEST(die_removes_temporary)
{
	/* a child that dies between open and commit leaves nothing behind */
	const char *p = test_path("dying.bin");
	pid_t pid = fork();
	if (pid == 0) {
		struct aout o;
		aout_open(&o, p, AOUT_BINARY);
		aout_write(&o, "partial", 7);
		die(EXIT_RUNTIME, "simulated failure");
	}
	int status;
	waitpid(pid, &status, 0);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 1);
	char cmd[600];
	snprintf(cmd, sizeof cmd, "ls -A '%s' | grep -q dying", test_tmpdir());
	ck_assert_int_ne(system(cmd), 0);
}
END_TEST

START_TEST(parsing)
{
	long v;
	ck_assert_int_eq(parse_long("42", 0, 100, &v), 0);
	ck_assert_int_eq(v, 42);
	ck_assert_int_eq(parse_long("42x", 0, 100, &v), -1);
	ck_assert_int_eq(parse_long("", 0, 100, &v), -1);
	ck_assert_int_eq(parse_long("101", 0, 100, &v), -1);
	ck_assert_int_eq(parse_long("99999999999999999999", 0, 100, &v), -1);
	uint64_t u;
	ck_assert_int_eq(parse_u64("100M", &u), 0);
	ck_assert(u == 100000000ull);
	ck_assert_int_eq(parse_u64("-1", &u), -1);
	ck_assert_int_eq(parse_u64("5k", &u), 0);
	ck_assert(u == 5000);
	double d;
	ck_assert_int_eq(parse_double("1e-3", &d), 0);
	ck_assert(d == 1e-3);
	ck_assert_int_eq(parse_double("nan", &d), -1);
	ck_assert_int_eq(parse_double("1e999", &d), -1);
	ck_assert_int_eq(parse_double("0.5 ", &d), -1);
}
END_TEST

START_TEST(bf16)
{
	ck_assert(round_bf16(1.0f) == 1.0f);
	ck_assert(f32_to_bf16(1.0f) == 0x3f80);
	/* ties to even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7 */
	ck_assert(round_bf16(1.0f + 0x1p-8f) == 1.0f);
	ck_assert(round_bf16(1.0f + 3 * 0x1p-8f) == 1.0f + 0x1p-6f);
	ck_assert(isnan(round_bf16(NAN)));
	ck_assert(isinf(round_bf16(INFINITY)));
}
END_TEST

static Suite *util_suite(void)
{
	Suite *s = suite_create("util");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, atomic_commit_and_abort);
	tcase_add_test(tc, device_written_in_place);
	tcase_add_test(tc, die_removes_temporary);
	tcase_add_test(tc, parsing);
	tcase_add_test(tc, bf16);
	suite_add_tcase(s, tc);
	return s;
}

CHECK_MAIN(util_suite)
