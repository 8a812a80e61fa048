/* common.h -- helpers shared by the benchmark drivers (bench/ours.c, bench/rmqc.c).
 *
 * Arguments are key=value pairs; every driver prints exactly one JSON object
 * per run on stdout (one line) and diagnostics on stderr. Exit status 0 means
 * the run did all its work (every message confirmed / consumed); otherwise the
 * JSON line has "ok":false and an "error".
 */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <time.h>

/* ---- arguments ------------------------------------------------------------ */

static int g_argc;
static char **g_argv;

static const char *arg_str(const char *key, const char *def) {
  size_t kl = strlen(key);
  for (int i = 2; i < g_argc; i++) {
    if (strncmp(g_argv[i], key, kl) == 0 && g_argv[i][kl] == '=') return g_argv[i] + kl + 1;
  }
  return def;
}

static long long arg_int(const char *key, long long def) {
  const char *v = arg_str(key, NULL);
  if (v == NULL || *v == '\0') return def;
  char *end;
  long long x = strtoll(v, &end, 10);
  if (*end != '\0') {
    fprintf(stderr, "bad integer for %s: '%s'\n", key, v);
    exit(2);
  }
  return x;
}

/* ---- time, CPU, memory ------------------------------------------------------ */

static inline uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_until_ns(uint64_t t) {
  struct timespec ts = {(time_t)(t / 1000000000ull), (long)(t % 1000000000ull)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0) {
  }
}

/* finer sleeps for the paced (end-to-end) runs: 1 us timer slack instead of 50 us */
static void pace_init(void) { prctl(PR_SET_TIMERSLACK, 1000UL, 0UL, 0UL, 0UL); }

static void sleep_us(long us) {
  struct timespec ts = {us / 1000000, (us % 1000000) * 1000L};
  nanosleep(&ts, NULL);
}

/* user + system CPU seconds of the whole process (all threads) */
static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec / 1e6;
}

/* context switches of the whole process (all threads) so far: voluntary (a thread waited)
 * and involuntary (preempted) */
static void ctx_switches(long long *vol, long long *invol) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  *vol = ru.ru_nvcsw;
  *invol = ru.ru_nivcsw;
}

/* a field of /proc/self/status in kB (VmRSS, VmHWM), -1 if absent */
static long proc_status_kb(const char *field) {
  FILE *f = fopen("/proc/self/status", "r");
  if (f == NULL) return -1;
  char line[256];
  long v = -1;
  size_t fl = strlen(field);
  while (fgets(line, sizeof line, f) != NULL) {
    if (strncmp(line, field, fl) == 0 && line[fl] == ':') {
      v = strtol(line + fl + 1, NULL, 10);
      break;
    }
  }
  fclose(f);
  return v;
}

/* the cost of one clock_gettime(CLOCK_MONOTONIC) pair, as seen by the latency loops */
static uint64_t timer_overhead_ns(void) {
  uint64_t best = UINT64_MAX;
  for (int i = 0; i < 10000; i++) {
    uint64_t a = now_ns();
    uint64_t b = now_ns();
    if (b - a < best) best = b - a;
  }
  return best;
}

/* ---- percentiles -------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* sorts v in place; nearest-rank percentile (q in 0..1) */
static uint64_t pct(const uint64_t *sorted, size_t n, double q) {
  if (n == 0) return 0;
  size_t k = (size_t)(q * (double)n + 0.999999999);
  if (k < 1) k = 1;
  if (k > n) k = n;
  return sorted[k - 1];
}

/* ---- JSON output ----------------------------------------------------------------- */

static char g_json[8192];
static size_t g_json_len;
static int g_json_fields;

static void json_raw(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(g_json + g_json_len, sizeof g_json - g_json_len, fmt, ap);
  va_end(ap);
  if (n > 0) g_json_len += (size_t)n;
  if (g_json_len >= sizeof g_json) g_json_len = sizeof g_json - 1;
}

static void json_key(const char *k) { json_raw("%s\"%s\":", g_json_fields++ ? "," : "{", k); }

static void json_s(const char *k, const char *v) {
  json_key(k);
  json_raw("\"");
  for (const char *p = v; p != NULL && *p; p++) {
    unsigned char c = (unsigned char)*p;
    if (c == '"' || c == '\\')
      json_raw("\\%c", c);
    else if (c < 0x20)
      json_raw("\\u%04x", c);
    else
      json_raw("%c", c);
  }
  json_raw("\"");
}
static void json_i(const char *k, long long v) {
  json_key(k);
  json_raw("%lld", v);
}
static void json_u(const char *k, uint64_t v) {
  json_key(k);
  json_raw("%" PRIu64, v);
}
static void json_f(const char *k, double v) {
  json_key(k);
  json_raw("%.6g", v);
}
static void json_b(const char *k, int v) {
  json_key(k);
  json_raw(v ? "true" : "false");
}
static void json_end(void) {
  json_raw("}");
  fputs(g_json, stdout);
  fputc('\n', stdout);
  fflush(stdout);
  g_json_len = 0;
  g_json_fields = 0;
}

/* common leading fields: client, mode, test label, run number */
static void json_begin(const char *client, const char *mode) {
  json_s("kind", "run");
  json_s("client", client);
  json_s("mode", mode);
  json_s("test", arg_str("test", mode));
  json_i("run", arg_int("run", 1));
}

/* percentiles of n samples (sorted here) under prefix, in ns */
static void json_pcts(const char *prefix, uint64_t *v, size_t n) {
  char k[64];
  qsort(v, n, sizeof *v, cmp_u64);
  uint64_t sum = 0;
  for (size_t i = 0; i < n; i++) sum += v[i];
  snprintf(k, sizeof k, "%s_samples", prefix);
  json_u(k, n);
  snprintf(k, sizeof k, "%s_mean_ns", prefix);
  json_f(k, n ? (double)sum / (double)n : 0.0);
  snprintf(k, sizeof k, "%s_p50_ns", prefix);
  json_u(k, pct(v, n, 0.50));
  snprintf(k, sizeof k, "%s_p99_ns", prefix);
  json_u(k, pct(v, n, 0.99));
  snprintf(k, sizeof k, "%s_p999_ns", prefix);
  json_u(k, pct(v, n, 0.999));
  snprintf(k, sizeof k, "%s_max_ns", prefix);
  json_u(k, n ? v[n - 1] : 0);
}

/* body layout of every benchmark message: [u64 seq][u64 send time ns][filler] */
static void fill_body(uint8_t *b, size_t size, uint64_t seq, uint64_t t) {
  if (size >= 8) memcpy(b, &seq, 8);
  if (size >= 16) memcpy(b + 8, &t, 8);
}

/* ---- the run's first failure: into the JSON line ("ok", "error") and onto stderr ---------- */
/* Each driver defines BENCH_PROG (its stderr prefix) before including this file. */

static char g_err[1024];

static void set_errf(const char *fmt, ...) {
  if (g_err[0] != '\0') return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(g_err, sizeof g_err, fmt, ap);
  va_end(ap);
}

/* the final fields of every line; returns the exit status */
static int finish(void) {
  json_b("ok", g_err[0] == '\0');
  if (g_err[0] != '\0') {
    json_s("error", g_err);
    fprintf(stderr, BENCH_PROG ": %s\n", g_err);
  }
  json_end();
  return g_err[0] == '\0' ? 0 : 1;
}

#endif
