/* check_json.c - the JSON reader and string writer. */
#include "check_common.h"
#include "json.h"

static struct json *P(const char *s)
{
	struct gpt_err e;
	return json_parse(s, strlen(s), &e);
}

START_TEST(values)
{
	struct json *j = P(" {\"a\": [1, -2.5e3, true, false, null], \"b\": \"x\\u00e9\\ud83d\\ude00\\n\", \"c\": {}} ");
	ck_assert_ptr_nonnull(j);
	const struct json *a = json_get(j, "a");
	ck_assert_int_eq(a->type, JSON_ARRAY);
	ck_assert_uint_eq(a->n, 5);
	ck_assert(a->items[1].num == -2500.0);
	ck_assert_int_eq(a->items[2].type, JSON_TRUE);
	ck_assert_int_eq(a->items[4].type, JSON_NULL);
	const struct json *b = json_get(j, "b");
	ck_assert_str_eq(b->str, "x\xc3\xa9\xf0\x9f\x98\x80\n");
	ck_assert_int_eq(json_get(j, "c")->type, JSON_OBJECT);
	ck_assert_ptr_null(json_get(j, "zz"));
	json_free(j);
}
END_TEST

START_TEST(big_integers)
{
	struct json *j = P("[9223372036854775807, 9007199254740993, 1.0, 1e3, -1]");
	int64_t v;
	ck_assert_int_eq(json_int(&j->items[0], 0, INT64_MAX, &v), 0);
	ck_assert(v == INT64_MAX);
	ck_assert_int_eq(json_int(&j->items[1], 0, INT64_MAX, &v), 0);
	ck_assert(v == 9007199254740993LL);
	ck_assert_int_eq(json_int(&j->items[2], 0, 10, &v), -1);
	ck_assert_int_eq(json_int(&j->items[3], 0, 10000, &v), -1);
	ck_assert_int_eq(json_int(&j->items[4], 0, 10, &v), -1);
	json_free(j);
	j = P("[18446744073709551616]");
	ck_assert_int_eq(json_int(&j->items[0], 0, INT64_MAX, &v), -1);
	json_free(j);
}
END_TEST

START_TEST(nul_in_string)
{
	struct json *j = P("\"a\\u0000b\"");
	ck_assert_uint_eq(j->len, 3);
	ck_assert(!memcmp(j->str, "a\0b", 3));
	json_free(j);
}
END_TEST

START_TEST(malformed)
{
	const char *bad[] = {"", " ", "{", "[1,", "[1 2]", "{\"a\" 1}", "{\"a\":}", "{1:2}", "\"abc",
	                     "\"\\x\"", "\"\\u12\"", "\"\\ud800\"", "\"\\udc00\"", "\"\\ud800\\u0041\"",
	                     "01", "-", "1.", "1e", "tru", "nul", "[1]x", "\"a\tb\"", "{\"a\":1,}", "[,]"};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		struct gpt_err e = {{0}};
		struct json *j = json_parse(bad[i], strlen(bad[i]), &e);
		ck_assert_msg(j == NULL, "accepted: %s", bad[i]);
		ck_assert_msg(strstr(e.msg, "JSON") != NULL, "no message for %s", bad[i]);
	}
	/* nesting limit */
	char deep[200];
	memset(deep, '[', 100);
	memset(deep + 100, ']', 100);
	struct gpt_err e;
	ck_assert_ptr_null(json_parse(deep, 200, &e));
	ck_assert_ptr_nonnull(strstr(e.msg, "deep"));
}
END_TEST

START_TEST(duplicates_and_writer)
{
	struct json *j = P("{\"a\":1,\"a\":2}");
	ck_assert(json_has_duplicates(j));
	ck_assert(json_get(j, "a")->num == 1.0);
	json_free(j);
	char *buf = NULL;
	size_t len = 0, cap = 0;
	json_buf_string(&buf, &len, &cap, "q\"\\\n\x01", 5);
	ck_assert_str_eq(buf, "\"q\\\"\\\\\\n\\u0001\"");
	j = P(buf);
	ck_assert_str_eq(j->str, "q\"\\\n\x01");
	json_free(j);
	free(buf);
}
END_TEST

static Suite *json_suite(void)
{
	Suite *s = suite_create("json");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, values);
	tcase_add_test(tc, big_integers);
	tcase_add_test(tc, nul_in_string);
	tcase_add_test(tc, malformed);
	tcase_add_test(tc, duplicates_and_writer);
	suite_add_tcase(s, tc);
	return s;
}

CHECK_MAIN(json_suite)
