/* chargen: continue a prompt with an exported keras-chargen model, on LiteRT's C API.
 *
 *   chargen DIR --prompt TEXT --length N --seed S [--temperature T] [--top-k K] [--top-p P]
 *               [--repetition-penalty R] [--stop TEXT]... [--threads N]
 *
 * DIR is an exported TFLite version folder (`keras-chargen export MODEL --format tflite`). The program
 * reads its manifest (generate_fixed.txt: vocabulary, level, shapes) and runs generate_fixed.tflite,
 * the whole decode loop with static shapes, once. It prints the continuation only, as the
 * SavedModel's `serving_default` gives it in `generated`, byte for byte and with no newline added: the
 * prompt is split and looked up as the SavedModel does it (characters: unknown ones are skipped;
 * words: the tokenizer's rules, unknown words are [UNK]), the same seed gives the same text, and a
 * stop string ends the text once the generated tokens end with its tokens (it is included).
 * A negative seed lets the model draw one; it is then reported on stderr.
 * Errors are one line on stderr and a non-zero exit (2: bad arguments, 1: anything else).
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "litert_api.h"

_Static_assert(sizeof(LrLayout) == 68, "LiteRtLayout is 68 bytes in LiteRT 2.x");
_Static_assert(sizeof(LrTensorType) == 72, "LiteRtRankedTensorType is 72 bytes in LiteRT 2.x");

#define MAX_STOPS_CLI 16
#define MAX_PROMPT_CHARS 100000 /* keras_chargen.settings.MAX_PROMPT_CHARS */
#define MAX_STOP_CHARS 1000     /* keras_chargen.settings.MAX_STOP_CHARS */
#define SEED_MAX 2147483647L

/* ---------- errors: one line on stderr ---------- */

static int saved_stderr = -1;   /* the real stderr while LiteRT's log goes to `log_file` */
static FILE* real_stderr = NULL; /* writes to the real stderr, also while LiteRT's log is captured */
static FILE* log_file = NULL;   /* LiteRT's own log lines, shown only in an error (the last one) */

static void restore_stderr(void) {
  if (saved_stderr >= 0) {
    fflush(stderr);
    dup2(saved_stderr, 2);
    close(saved_stderr);
    saved_stderr = -1;
  }
}

/* The last line LiteRT logged with "ERROR" in it, or "" (for the one-line error). */
static void last_runtime_error(char* out, size_t size) {
  out[0] = '\0';
  if (log_file == NULL) return;
  fflush(stderr);
  rewind(log_file);
  char line[1024];
  while (fgets(line, sizeof line, log_file)) {
    if (strstr(line, "ERROR")) {
      line[strcspn(line, "\r\n")] = '\0';
      snprintf(out, size, "%s", line);
    }
  }
}

static void fail(int code, const char* format, ...) {
  char runtime[1024];
  last_runtime_error(runtime, sizeof runtime);
  restore_stderr();
  va_list args;
  va_start(args, format);
  fputs("chargen: error: ", stderr);
  vfprintf(stderr, format, args);
  va_end(args);
  if (runtime[0]) fprintf(stderr, " (LiteRT: %s)", runtime);
  fputc('\n', stderr);
  exit(code);
}

#define USAGE_ERROR 2
#define RUN_ERROR 1

/* LiteRT writes INFO and WARNING lines to stderr; keep them out of the program's stderr unless
 * CHARGEN_VERBOSE=1 (they come back in an error message). */
static void capture_runtime_log(void) {
  const char* verbose = getenv("CHARGEN_VERBOSE");
  if (verbose && strcmp(verbose, "0") != 0) return;
  log_file = tmpfile();
  if (log_file == NULL) return;
  fflush(stderr);
  saved_stderr = dup(2);
  real_stderr = fdopen(dup(saved_stderr), "w");
  dup2(fileno(log_file), 2);
}

static void* checked_malloc(size_t size) {
  void* p = malloc(size ? size : 1);
  if (p == NULL) fail(RUN_ERROR, "out of memory");
  return p;
}

/* ---------- UTF-8 ---------- */

/* Decode UTF-8 into code points; returns the count, or -1 if `text` is not valid UTF-8. */
static long utf8_decode(const char* text, size_t length, uint32_t* out) {
  const unsigned char* s = (const unsigned char*)text;
  size_t i = 0;
  long n = 0;
  while (i < length) {
    uint32_t c = s[i];
    int extra;
    uint32_t min;
    if (c < 0x80) { extra = 0; min = 0; }
    else if ((c & 0xE0) == 0xC0) { extra = 1; c &= 0x1F; min = 0x80; }
    else if ((c & 0xF0) == 0xE0) { extra = 2; c &= 0x0F; min = 0x800; }
    else if ((c & 0xF8) == 0xF0) { extra = 3; c &= 0x07; min = 0x10000; }
    else return -1;
    if (extra > 0 && i + extra >= length) return -1; /* truncated */
    for (int k = 1; k <= extra; k++) {
      if ((s[i + k] & 0xC0) != 0x80) return -1;
      c = (c << 6) | (s[i + k] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return -1;
    out[n++] = c;
    i += extra + 1;
  }
  return n;
}

static size_t utf8_encode(uint32_t c, char* out) {
  if (c < 0x80) { out[0] = (char)c; return 1; }
  if (c < 0x800) { out[0] = (char)(0xC0 | (c >> 6)); out[1] = (char)(0x80 | (c & 0x3F)); return 2; }
  if (c < 0x10000) {
    out[0] = (char)(0xE0 | (c >> 12)); out[1] = (char)(0x80 | ((c >> 6) & 0x3F));
    out[2] = (char)(0x80 | (c & 0x3F));
    return 3;
  }
  out[0] = (char)(0xF0 | (c >> 18)); out[1] = (char)(0x80 | ((c >> 12) & 0x3F));
  out[2] = (char)(0x80 | ((c >> 6) & 0x3F)); out[3] = (char)(0x80 | (c & 0x3F));
  return 4;
}

/* ---------- the manifest (generate_fixed.txt) ---------- */

typedef struct { uint32_t first, last; } Range;
typedef struct { uint32_t code_point; uint32_t* to; int count; } Lowering;
typedef struct { char* name; double off; } Input;

typedef struct {
  char model[256], signature[64], level[8];
  int lowercase, start_id, document_start, document_end;
  long prompt, new_ids, stops, stop;
  char* no_space_before; /* UTF-8, each character one token that takes no space before it */
  char* no_space_after;
  Input inputs[32];
  int num_inputs;
  char** tokens;         /* tokens[i] is id i + 1 */
  int num_tokens;
  Range* word_chars; int num_word_chars;
  Range* spaces; int num_spaces;
  Lowering* lower; int num_lower;
  /* lookups built after reading */
  uint32_t* char_cp; int* char_id; int num_chars; /* character level: sorted code points → ids */
  int* table; size_t table_size;                  /* word level: open addressing, token index + 1 */
} Manifest;

/* Undo the manifest's escapes in place (`\\`, `\n`, `\r`, `\xHH`); returns the length or -1. */
static long unescape_value(char* s) {
  char* out = s;
  for (char* p = s; *p; p++) {
    if (*p != '\\') { *out++ = *p; continue; }
    p++;
    if (*p == '\\') *out++ = '\\';
    else if (*p == 'n') *out++ = '\n';
    else if (*p == 'r') *out++ = '\r';
    else if (*p == 'x' && p[1] && p[2]) {
      char hex[3] = {p[1], p[2], 0};
      char* end;
      long v = strtol(hex, &end, 16);
      if (*end) return -1;
      *out++ = (char)v;
      p += 2;
    } else return -1;
  }
  *out = '\0';
  return out - s;
}

typedef struct { char* text; char* cursor; int line; const char* path; } Reader;

static char* next_line(Reader* r) {
  if (r->cursor == NULL || *r->cursor == '\0') fail(RUN_ERROR, "%s: ends early (line %d)", r->path, r->line + 1);
  char* line = r->cursor;
  char* newline = strchr(line, '\n');
  if (newline) { *newline = '\0'; r->cursor = newline + 1; }
  else r->cursor = line + strlen(line);
  r->line++;
  return line;
}

static long parse_count(Reader* r, char* line, const char* key) {
  size_t k = strlen(key);
  char* end;
  if (strncmp(line, key, k) != 0 || line[k] != ' ') fail(RUN_ERROR, "%s: line %d: expected '%s N'", r->path, r->line, key);
  long n = strtol(line + k + 1, &end, 10);
  if (*end || n < 0 || n > 10000000) fail(RUN_ERROR, "%s: line %d: bad count", r->path, r->line);
  return n;
}

static Range* read_ranges(Reader* r, const char* key, int* count) {
  *count = (int)parse_count(r, next_line(r), key);
  Range* ranges = checked_malloc(sizeof(Range) * (size_t)*count);
  for (int i = 0; i < *count; i++) {
    char* line = next_line(r);
    char* end;
    unsigned long a = strtoul(line, &end, 16), b = strtoul(end, &end, 16);
    if (*end || b < a) fail(RUN_ERROR, "%s: line %d: bad range", r->path, r->line);
    ranges[i].first = (uint32_t)a;
    ranges[i].last = (uint32_t)b;
  }
  return ranges;
}

static uint64_t fnv1a(const char* s, size_t n) {
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n; i++) { h ^= (unsigned char)s[i]; h *= 1099511628211ULL; }
  return h;
}

static int compare_cp(const void* a, const void* b) {
  uint32_t x = *(const uint32_t*)a, y = *(const uint32_t*)b;
  return x < y ? -1 : x > y;
}

static void build_lookups(Manifest* m) {
  if (strcmp(m->level, "char") == 0) {
    /* (code point, id) pairs sorted by code point; tokens that are not one character never match */
    uint32_t* pairs = checked_malloc(sizeof(uint32_t) * 2 * (size_t)m->num_tokens);
    int n = 0;
    for (int i = 0; i < m->num_tokens; i++) {
      uint32_t cps[4];
      size_t bytes = strlen(m->tokens[i]);
      long count = bytes <= 4 ? utf8_decode(m->tokens[i], bytes, cps) : 0; /* a character is 1 to 4 bytes */
      if (count == 1 && i + 1 != m->document_start && i + 1 != m->document_end) {
        pairs[2 * n] = cps[0];
        pairs[2 * n + 1] = (uint32_t)(i + 1);
        n++;
      }
    }
    qsort(pairs, (size_t)n, 2 * sizeof(uint32_t), compare_cp);
    m->char_cp = checked_malloc(sizeof(uint32_t) * (size_t)n);
    m->char_id = checked_malloc(sizeof(int) * (size_t)n);
    for (int i = 0; i < n; i++) { m->char_cp[i] = pairs[2 * i]; m->char_id[i] = (int)pairs[2 * i + 1]; }
    m->num_chars = n;
    free(pairs);
  } else {
    m->table_size = 16;
    while (m->table_size < 2 * (size_t)m->num_tokens) m->table_size *= 2;
    m->table = calloc(m->table_size, sizeof(int));
    if (m->table == NULL) fail(RUN_ERROR, "out of memory");
    for (int i = 0; i < m->num_tokens; i++) {
      size_t slot = fnv1a(m->tokens[i], strlen(m->tokens[i])) & (m->table_size - 1);
      while (m->table[slot]) slot = (slot + 1) & (m->table_size - 1);
      m->table[slot] = i + 1;
    }
  }
}

static void read_manifest(const char* path, Manifest* m) {
  FILE* f = fopen(path, "rb");
  if (f == NULL) {
    if (errno == ENOENT)
      fail(RUN_ERROR, "%s is missing: export the model again with this version of keras-chargen "
                      "(keras-chargen export MODEL --format tflite)", path);
    fail(RUN_ERROR, "cannot read %s: %s", path, strerror(errno));
  }
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  rewind(f);
  char* text = checked_malloc((size_t)size + 1);
  if (size < 0 || fread(text, 1, (size_t)size, f) != (size_t)size) fail(RUN_ERROR, "cannot read %s", path);
  fclose(f);
  text[size] = '\0';
  if (strlen(text) != (size_t)size) fail(RUN_ERROR, "%s: holds a NUL byte", path);
  memset(m, 0, sizeof *m);
  m->prompt = m->new_ids = m->stops = m->stop = -1;
  Reader r = {text, text, 0, path};
  if (strcmp(next_line(&r), "chargen-native 1") != 0)
    fail(RUN_ERROR, "%s: not a manifest this program reads (its first line is not 'chargen-native 1')", path);
  char* line;
  for (;;) {
    line = next_line(&r);
    if (strncmp(line, "tokens ", 7) == 0) break;
    char* value = strchr(line, ' ');
    if (value == NULL) fail(RUN_ERROR, "%s: line %d: expected 'key value'", path, r.line);
    *value++ = '\0';
    long number = strtol(value, NULL, 10);
    if (strcmp(line, "model") == 0) snprintf(m->model, sizeof m->model, "%s", value);
    else if (strcmp(line, "signature") == 0) snprintf(m->signature, sizeof m->signature, "%s", value);
    else if (strcmp(line, "level") == 0) snprintf(m->level, sizeof m->level, "%s", value);
    else if (strcmp(line, "lowercase") == 0) m->lowercase = (int)number;
    else if (strcmp(line, "start_id") == 0) m->start_id = (int)number;
    else if (strcmp(line, "document_start") == 0) m->document_start = (int)number;
    else if (strcmp(line, "document_end") == 0) m->document_end = (int)number;
    else if (strcmp(line, "prompt") == 0) m->prompt = number;
    else if (strcmp(line, "new") == 0) m->new_ids = number;
    else if (strcmp(line, "stops") == 0) m->stops = number;
    else if (strcmp(line, "stop") == 0) m->stop = number;
    else if (strcmp(line, "no_space_before") == 0 || strcmp(line, "no_space_after") == 0) {
      if (unescape_value(value) < 0) fail(RUN_ERROR, "%s: line %d: bad escape", path, r.line);
      *(line[9] == 'b' ? &m->no_space_before : &m->no_space_after) = value;
    } else if (strcmp(line, "input") == 0) {
      char* off = strchr(value, ' ');
      if (off == NULL || m->num_inputs == 32) fail(RUN_ERROR, "%s: line %d: bad input", path, r.line);
      *off++ = '\0';
      m->inputs[m->num_inputs].name = value;
      m->inputs[m->num_inputs].off = strcmp(off, "-") == 0 ? 0.0 : strtod(off, NULL);
      m->num_inputs++;
    } /* other keys: added by a later exporter, not needed here */
  }
  if (strcmp(m->level, "char") != 0 && strcmp(m->level, "word") != 0)
    fail(RUN_ERROR, "%s: unknown level '%s'", path, m->level);
  if (m->prompt < 1 || m->new_ids < 1 || m->stops < 1 || m->stop < 1 || !m->model[0] || !m->signature[0] ||
      !m->no_space_before || !m->no_space_after)
    fail(RUN_ERROR, "%s: lacks model, signature, shapes or spacing rules", path);
  m->num_tokens = (int)parse_count(&r, line, "tokens");
  m->tokens = checked_malloc(sizeof(char*) * (size_t)m->num_tokens);
  for (int i = 0; i < m->num_tokens; i++) {
    m->tokens[i] = next_line(&r);
    if (unescape_value(m->tokens[i]) < 0) fail(RUN_ERROR, "%s: line %d: bad escape", path, r.line);
  }
  if (strcmp(m->level, "word") == 0) {
    m->word_chars = read_ranges(&r, "word_chars", &m->num_word_chars);
    m->spaces = read_ranges(&r, "spaces", &m->num_spaces);
    if (m->lowercase) {
      m->num_lower = (int)parse_count(&r, next_line(&r), "lower");
      m->lower = checked_malloc(sizeof(Lowering) * (size_t)m->num_lower);
      for (int i = 0; i < m->num_lower; i++) {
        char* entry = next_line(&r);
        char* end;
        m->lower[i].code_point = (uint32_t)strtoul(entry, &end, 16);
        if (*end != ' ' || unescape_value(end + 1) < 0) fail(RUN_ERROR, "%s: line %d: bad lowering", path, r.line);
        m->lower[i].to = checked_malloc(sizeof(uint32_t) * (strlen(end + 1) + 1));
        long count = utf8_decode(end + 1, strlen(end + 1), m->lower[i].to);
        if (count < 0 || count > 3) fail(RUN_ERROR, "%s: line %d: bad lowering", path, r.line);
        m->lower[i].count = (int)count;
      }
    }
  }
  if (strcmp(next_line(&r), "end") != 0) fail(RUN_ERROR, "%s: line %d: expected 'end'", path, r.line);
  build_lookups(m);
}

/* ---------- text → ids, ids → text (as keras_chargen.export.runtimes.TextCodec) ---------- */

static int in_ranges(const Range* ranges, int count, uint32_t c) {
  int lo = 0, hi = count - 1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2;
    if (c < ranges[mid].first) hi = mid - 1;
    else if (c > ranges[mid].last) lo = mid + 1;
    else return 1;
  }
  return 0;
}

static const Lowering* find_lowering(const Manifest* m, uint32_t c) {
  int lo = 0, hi = m->num_lower - 1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2;
    if (c < m->lower[mid].code_point) hi = mid - 1;
    else if (c > m->lower[mid].code_point) lo = mid + 1;
    else return &m->lower[mid];
  }
  return NULL;
}

static int char_id(const Manifest* m, uint32_t c) {
  int lo = 0, hi = m->num_chars - 1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2;
    if (c < m->char_cp[mid]) hi = mid - 1;
    else if (c > m->char_cp[mid]) lo = mid + 1;
    else return m->char_id[mid];
  }
  return 0;
}

static int word_id(const Manifest* m, const char* word, size_t n) {
  size_t slot = fnv1a(word, n) & (m->table_size - 1);
  while (m->table[slot]) {
    const char* token = m->tokens[m->table[slot] - 1];
    if (strlen(token) == n && memcmp(token, word, n) == 0) return m->table[slot];
    slot = (slot + 1) & (m->table_size - 1);
  }
  return 0;
}

/* Lowercase as ICU does for the SavedModel (per code point; a capital sigma after a letter and not before
 * one becomes the final sigma). `out` holds 3 code points per input one. */
static long lowercase(const Manifest* m, const uint32_t* cps, long n, uint32_t* out) {
  long k = 0;
  for (long i = 0; i < n; i++) {
    if (cps[i] == 0x03A3) {
      int after_letter = i > 0 && in_ranges(m->word_chars, m->num_word_chars, cps[i - 1]);
      int before_letter = i + 1 < n && in_ranges(m->word_chars, m->num_word_chars, cps[i + 1]);
      out[k++] = after_letter && !before_letter ? 0x03C2 : 0x03C3;
      continue;
    }
    const Lowering* low = find_lowering(m, cps[i]);
    if (low == NULL) { out[k++] = cps[i]; continue; }
    for (int j = 0; j < low->count; j++) out[k++] = low->to[j];
  }
  return k;
}

/* The ids of `text`: characters (unknown ones get 0) or words (tokenizer.split_words; unknown ones 0).
 * Returns the count; `ids` must hold 3 ids per byte of `text` (lowercasing may lengthen a text). */
static long text_ids(const Manifest* m, const char* flag, const char* text, int* ids) {
  size_t length = strlen(text);
  uint32_t* cps = checked_malloc(sizeof(uint32_t) * (length + 1));
  long n = utf8_decode(text, length, cps);
  if (n < 0) fail(USAGE_ERROR, "%s is not valid UTF-8", flag);
  long count = 0;
  if (strcmp(m->level, "char") == 0) {
    for (long i = 0; i < n; i++) ids[count++] = char_id(m, cps[i]);
    free(cps);
    return count;
  }
  if (m->lowercase) {
    uint32_t* lowered = checked_malloc(sizeof(uint32_t) * (size_t)(3 * n + 1));
    n = lowercase(m, cps, n, lowered);
    free(cps);
    cps = lowered;
  }
  char* word = checked_malloc(4 * (size_t)n + 4);
  size_t w = 0;
  for (long i = 0; i <= n; i++) {
    int ends = i == n, space = 0, alone = 0;
    if (!ends) {
      space = cps[i] == ' ' || in_ranges(m->spaces, m->num_spaces, cps[i]);
      alone = !space && !in_ranges(m->word_chars, m->num_word_chars, cps[i]);
    }
    if ((ends || space || alone) && w > 0) { ids[count++] = word_id(m, word, w); w = 0; }
    if (alone) {
      char one[4];
      size_t k = utf8_encode(cps[i], one);
      ids[count++] = word_id(m, one, k);
    } else if (!ends && !space) {
      w += utf8_encode(cps[i], word + w);
    }
  }
  free(word);
  free(cps);
  return count;
}

static int is_marker(const Manifest* m, int id) {
  return id > 0 && (id == m->document_start || id == m->document_end);
}

/* Whether `token` is one of the characters of `set` (the detokenizer's no-space rules). */
static int one_of(const char* set, const char* token) {
  size_t n = strlen(token);
  if (n == 0 || n > 4) return 0; /* one character is 1 to 4 bytes */
  for (const char* p = set; *p;) {
    size_t k = 1;
    while (k < 4 && ((unsigned char)p[k] & 0xC0) == 0x80) k++; /* this character's bytes */
    if (k == n && memcmp(p, token, n) == 0) return 1;
    p += k;
  }
  return 0;
}

/* The token that decides the spaces around `id` (a marker spaces as a newline, id 0 is [UNK]). */
static const char* spacing(const Manifest* m, int id) {
  if (is_marker(m, id)) return "\n";
  return id > 0 ? m->tokens[id - 1] : "[UNK]";
}

/* Print the continuation of generated `ids` (`count`, no padding) after a prompt whose last id is `prev`. */
static void print_text(const Manifest* m, const char* prompt, int prev, const int* ids, long count) {
  int word = strcmp(m->level, "word") == 0;
  size_t plen = strlen(prompt);
  int prompt_space = plen > 0 && strchr("\t\n\f\r ", prompt[plen - 1]) != NULL;
  int first = 1;
  for (long i = 0; i < count; i++) {
    int id = ids[i];
    if (!is_marker(m, id)) {
      const char* token = m->tokens[id - 1];
      int joined = !word || one_of(m->no_space_before, token) || one_of(m->no_space_after, spacing(m, prev));
      /* as WordCodec.finish: no second space after a prompt that ends in one */
      if (!joined && !(first && prompt_space)) fputc(' ', stdout);
      fputs(token, stdout);
      first = 0;
    }
    prev = id;
  }
}

/* ---------- arguments ---------- */

typedef struct {
  const char* dir;
  const char* prompt;
  long length, seed, top_k, threads;
  double temperature, top_p, repetition_penalty;
  char* stops[MAX_STOPS_CLI];
  int num_stops;
} Args;

static const char* USAGE =
    "usage: chargen DIR [--prompt TEXT] [--length N] [--seed S] [--temperature T] [--top-k K] [--top-p P]\n"
    "               [--repetition-penalty R] [--stop TEXT]... [--threads N]\n"
    "Continue TEXT with the keras-chargen model exported in DIR (a TFLite version folder: generate_fixed.tflite\n"
    "and generate_fixed.txt) and print the continuation, as the SavedModel's serving_default 'generated'.\n"
    "  --prompt TEXT            the text to continue (default: none, start at a line start)\n"
    "  --length N               tokens to generate, 0..100000 (characters, or words at the word level; default 500)\n"
    "  --seed S                 0..2147483647: the same seed gives the same text as every other runtime;\n"
    "                           negative or absent: a random seed, reported on stderr\n"
    "  --temperature T          a finite number >= 0 (0 = greedy; default 0.8)\n"
    "  --top-k K                an integer >= 1 (omit to turn it off)\n"
    "  --top-p P                a number in (0, 1] (1 = off)\n"
    "  --repetition-penalty R   a finite number > 0 (1 = off)\n"
    "  --stop TEXT              stop once the text ends with TEXT (included); escapes like \\n work; repeatable\n"
    "  --threads N              CPU threads, 1..64 (default: LiteRT's, 1 in ai-edge-litert 2.3)\n"
    "CHARGEN_VERBOSE=1 shows LiteRT's own log lines.\n";

static long parse_long(const char* flag, const char* value, long low, long high, const char* rule) {
  char* end;
  errno = 0;
  long v = strtol(value, &end, 10);
  if (!*value || *end || errno || v < low || v > high) fail(USAGE_ERROR, "%s must be %s; got '%s'", flag, rule, value);
  return v;
}

static double parse_double(const char* value) {
  char* end;
  double v = strtod(value, &end);
  if (!*value || *end || isnan(v)) return NAN;
  return v;
}

/* Shell escapes in a stop string, as the Python CLI reads them (`\n`, `\t`, `\\`, `\xHH`, `\uXXXX`, …). */
static char* unescape_flag(const char* flag, const char* text) {
  char* out = checked_malloc(4 * strlen(text) + 1);
  size_t k = 0;
  for (const char* p = text; *p; p++) {
    if (*p != '\\') { out[k++] = *p; continue; }
    p++;
    const char* simple = "\\\\''\"\"a\ab\bf\fn\nr\rt\tv\v";
    const char* hit = *p ? strchr(simple, *p) : NULL;
    if (hit && (hit - simple) % 2 == 0) { out[k++] = hit[1]; continue; }
    int digits = *p == 'x' ? 2 : *p == 'u' ? 4 : *p == 'U' ? 8 : 0;
    if (digits) {
      uint32_t c = 0;
      for (int i = 1; i <= digits; i++) {
        char h = p[i];
        int v = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
        if (v < 0) fail(USAGE_ERROR, "%s has an invalid escape in '%s'", flag, text);
        c = c * 16 + (uint32_t)v;
      }
      if (c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) fail(USAGE_ERROR, "%s has an invalid escape in '%s'", flag, text);
      k += utf8_encode(c, out + k);
      p += digits;
      continue;
    }
    if (*p >= '0' && *p <= '7') {
      uint32_t c = 0;
      int i = 0;
      while (i < 3 && p[i] >= '0' && p[i] <= '7') c = c * 8 + (uint32_t)(p[i++] - '0');
      k += utf8_encode(c, out + k);
      p += i - 1;
      continue;
    }
    if (!*p) fail(USAGE_ERROR, "%s ends in a lone backslash: '%s'", flag, text);
    out[k++] = '\\';
    p--; /* an unknown escape stays as typed */
  }
  out[k] = '\0';
  return out;
}

static void parse_args(int argc, char** argv, Args* a) {
  memset(a, 0, sizeof *a);
  a->prompt = "";
  a->length = 500;
  a->seed = -1;
  a->temperature = 0.8;
  a->top_p = 1.0;
  a->repetition_penalty = 1.0;
  for (int i = 1; i < argc; i++) {
    const char* arg = argv[i];
    if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) { fputs(USAGE, stdout); exit(0); }
    if (strncmp(arg, "--", 2) != 0) {
      if (a->dir) fail(USAGE_ERROR, "one DIR only; got '%s' and '%s'", a->dir, arg);
      a->dir = arg;
      continue;
    }
    char flag[64];
    const char* value;
    const char* eq = strchr(arg, '=');
    if (eq) {
      snprintf(flag, sizeof flag, "%.*s", (int)(eq - arg), arg);
      value = eq + 1;
    } else {
      snprintf(flag, sizeof flag, "%s", arg);
      value = NULL;
    }
    static const char* known[] = {"--prompt", "--length", "--seed", "--temperature", "--top-k", "--top-p",
                                  "--repetition-penalty", "--stop", "--threads", NULL};
    int found = 0;
    for (int k = 0; known[k]; k++) found |= strcmp(flag, known[k]) == 0;
    if (!found) fail(USAGE_ERROR, "unknown flag %s (see chargen --help)", flag);
    if (value == NULL) {
      if (i + 1 >= argc) fail(USAGE_ERROR, "%s needs a value", flag);
      value = argv[++i];
    }
    if (strcmp(flag, "--prompt") == 0) a->prompt = value;
    else if (strcmp(flag, "--length") == 0) a->length = parse_long(flag, value, 0, 100000, "an integer in 0..100000");
    else if (strcmp(flag, "--seed") == 0)
      a->seed = parse_long(flag, value, -SEED_MAX - 1, SEED_MAX, "an integer <= 2147483647 (negative: random)");
    else if (strcmp(flag, "--threads") == 0) a->threads = parse_long(flag, value, 1, 64, "an integer in 1..64");
    else if (strcmp(flag, "--top-k") == 0)
      a->top_k = parse_long(flag, value, 1, SEED_MAX, "an integer >= 1 (omit --top-k to turn it off)");
    else if (strcmp(flag, "--temperature") == 0) {
      a->temperature = parse_double(value);
      if (!isfinite(a->temperature) || a->temperature < 0)
        fail(USAGE_ERROR, "--temperature must be a finite number >= 0; got '%s'", value);
    } else if (strcmp(flag, "--top-p") == 0) {
      a->top_p = parse_double(value);
      if (isnan(a->top_p) || a->top_p <= 0 || a->top_p > 1)
        fail(USAGE_ERROR, "--top-p must be a number in (0, 1] (1 = off); got '%s'", value);
    } else if (strcmp(flag, "--repetition-penalty") == 0) {
      a->repetition_penalty = parse_double(value);
      if (!isfinite(a->repetition_penalty) || a->repetition_penalty <= 0)
        fail(USAGE_ERROR, "--repetition-penalty must be a finite number > 0 (1 = off); got '%s'", value);
    } else if (strcmp(flag, "--stop") == 0) {
      if (a->num_stops == MAX_STOPS_CLI) fail(USAGE_ERROR, "at most %d --stop strings", MAX_STOPS_CLI);
      char* stop = unescape_flag(flag, value);
      if (!*stop) fail(USAGE_ERROR, "--stop must be a non-empty string (omit --stop to turn it off)");
      a->stops[a->num_stops++] = stop;
    }
  }
  if (a->dir == NULL) fail(USAGE_ERROR, "missing DIR, the exported TFLite version folder (see chargen --help)");
}

/* ---------- LiteRT ---------- */

static const char* status_name(LrStatus s) {
  switch (s) {
    case 1: return "invalid argument";
    case 2: return "memory allocation failure";
    case 3: return "runtime failure";
    case 4: return "missing input tensor";
    case 5: return "unsupported";
    case 6: return "not found";
    case 500: return "file I/O";
    case 501: return "invalid flatbuffer";
    default: return "error";
  }
}

#define CHECK(call, what)                                                                  \
  do {                                                                                     \
    LrStatus status_ = (call);                                                             \
    if (status_ != LR_OK) fail(RUN_ERROR, "%s: %s (status %d)", what, status_name(status_), status_); \
  } while (0)

typedef struct { void* data; size_t bytes; LrTensorBuffer buffer; } HostTensor;

static void host_tensor(LrTensorType* type, HostTensor* t) {
  size_t count = 1;
  for (unsigned d = 0; d < type->layout.rank; d++) count *= (size_t)type->layout.dimensions[d];
  t->bytes = (count * 4 + 63) / 64 * 64; /* LiteRT wants host memory 64-byte aligned */
  if (posix_memalign(&t->data, 64, t->bytes) != 0) fail(RUN_ERROR, "out of memory");
  memset(t->data, 0, t->bytes);
  CHECK(LiteRtCreateTensorBufferFromHostMemory(type, t->data, t->bytes, NULL, &t->buffer), "a tensor buffer");
}

/* The type of a signature input or output, checked against what this program assumes. */
static LrTensorType tensor_type(LrSignature sig, LrIndex index, int output, const char* name, const char* path) {
  LrTensor tensor;
  LrTensorType type;
  memset(&type, 0, sizeof type);
  if (output) CHECK(LiteRtGetSignatureOutputTensorByIndex(sig, index, &tensor), "the model's outputs");
  else CHECK(LiteRtGetSignatureInputTensorByIndex(sig, index, &tensor), "the model's inputs");
  CHECK(LiteRtGetRankedTensorType(tensor, &type), "a tensor's type");
  int ok = (type.element_type == LR_INT32 || type.element_type == LR_FLOAT32) && type.layout.rank <= 3;
  for (unsigned d = 0; ok && d < type.layout.rank; d++) ok = type.layout.dimensions[d] >= 1;
  if (!ok)
    fail(RUN_ERROR, "%s: %s '%s' is not a fixed-shape int32/float32 tensor (a model not exported for this "
                    "program, or a LiteRT whose C types differ from litert_api.h)", path, output ? "output" : "input", name);
  return type;
}

int main(int argc, char** argv) {
  Args args;
  parse_args(argc, argv, &args);
  char path[4096];
  snprintf(path, sizeof path, "%s/generate_fixed.txt", args.dir);
  if (access(args.dir, F_OK) != 0) fail(RUN_ERROR, "%s: no such directory", args.dir);
  Manifest m;
  read_manifest(path, &m);
  if (args.length > m.new_ids) fail(USAGE_ERROR, "--length must be at most %ld for this model; got %ld", m.new_ids, args.length);
  long prompt_chars = 0;
  for (const char* p = args.prompt; *p; p++) prompt_chars += ((unsigned char)*p & 0xC0) != 0x80;
  if (prompt_chars > MAX_PROMPT_CHARS)
    fail(USAGE_ERROR, "--prompt has %ld characters; the maximum is %d", prompt_chars, MAX_PROMPT_CHARS);

  /* the prompt's ids: characters unknown to the model are skipped, unknown words are [UNK] (fed as -1) */
  int* prompt_ids = checked_malloc(sizeof(int) * (3 * strlen(args.prompt) + 1));
  long n = text_ids(&m, "--prompt", args.prompt, prompt_ids);
  long kept = 0;
  int word = strcmp(m.level, "word") == 0;
  for (long i = 0; i < n; i++) {
    if (prompt_ids[i] > 0) prompt_ids[kept++] = prompt_ids[i];
    else if (word) prompt_ids[kept++] = -1;
  }
  if (kept > m.prompt)
    fail(USAGE_ERROR, "--prompt has %ld tokens; this model takes at most %ld (generate_fixed.tflite)", kept, m.prompt);
  int prev = kept ? (prompt_ids[kept - 1] > 0 ? prompt_ids[kept - 1] : 0)
                  : (m.document_start ? m.document_start : m.start_id);
  if (args.num_stops > m.stops) fail(USAGE_ERROR, "at most %ld --stop strings for this model", m.stops);

  /* stop sequences: a stop with a token outside the vocabulary never matches (all 0 = unused) */
  int* stop_ids = calloc((size_t)(m.stops * m.stop), sizeof(int));
  if (stop_ids == NULL) fail(RUN_ERROR, "out of memory");
  for (int s = 0; s < args.num_stops; s++) {
    size_t chars = strlen(args.stops[s]);
    int* ids = checked_malloc(sizeof(int) * (3 * chars + 1));
    long k = text_ids(&m, "--stop", args.stops[s], ids);
    long cps = 0;
    for (const char* p = args.stops[s]; *p; p++) cps += ((unsigned char)*p & 0xC0) != 0x80;
    if (cps > MAX_STOP_CHARS) fail(USAGE_ERROR, "--stop has %ld characters; the maximum is %d", cps, MAX_STOP_CHARS);
    int known = k > 0;
    for (long i = 0; i < k; i++) known &= ids[i] > 0;
    if (known && k > m.stop) fail(USAGE_ERROR, "--stop has %ld tokens; this model takes at most %ld", k, m.stop);
    for (long i = 0; known && i < k; i++) stop_ids[s * m.stop + i] = ids[i];
    free(ids);
  }

  /* LiteRT: load, compile for the CPU, fill the inputs by name, run once */
  capture_runtime_log();
  char model_path[4096];
  snprintf(model_path, sizeof model_path, "%s/%s", args.dir, m.model);
  if (access(model_path, R_OK) != 0) fail(RUN_ERROR, "%s: %s", model_path, strerror(errno));
  LrEnvironment env;
  LrModel model;
  LrOptions options;
  LrCompiledModel compiled;
  CHECK(LiteRtCreateEnvironment(0, NULL, &env), "the LiteRT environment");
  CHECK(LiteRtCreateModelFromFile(env, model_path, &model), model_path);
  LrIndex num_signatures, sig_index = (LrIndex)-1;
  LrSignature sig = NULL;
  CHECK(LiteRtGetNumModelSignatures(model, &num_signatures), "the model's signatures");
  for (LrIndex i = 0; i < num_signatures; i++) {
    const char* key;
    LrSignature candidate;
    CHECK(LiteRtGetModelSignature(model, i, &candidate), "a signature");
    CHECK(LiteRtGetSignatureKey(candidate, &key), "a signature's name");
    if (strcmp(key, m.signature) == 0) { sig = candidate; sig_index = i; }
  }
  if (sig == NULL) fail(RUN_ERROR, "%s has no signature '%s'", model_path, m.signature);
  CHECK(LiteRtCreateOptions(&options), "the compilation options");
  CHECK(LiteRtSetOptionsHardwareAccelerators(options, LR_ACCELERATOR_CPU), "the CPU accelerator");
  if (args.threads > 0) {
    char* toml = checked_malloc(64);
    snprintf(toml, 64, "num_threads = %ld\n", args.threads);
    LrOpaqueOptions cpu;
    CHECK(LiteRtCreateOpaqueOptions("xnnpack", toml, free, &cpu), "the CPU options");
    CHECK(LiteRtAddOpaqueOptions(options, cpu), "the CPU options");
  }
  CHECK(LiteRtCreateCompiledModel(env, model, options, &compiled), "compiling the model");

  LrIndex num_inputs, num_outputs;
  CHECK(LiteRtGetNumSignatureInputs(sig, &num_inputs), "the model's inputs");
  CHECK(LiteRtGetNumSignatureOutputs(sig, &num_outputs), "the model's outputs");
  if (num_inputs > 32 || num_outputs > 8) fail(RUN_ERROR, "%s: unexpected signature", model_path);
  HostTensor inputs[32], outputs[8];
  LrTensorBuffer in_buffers[32], out_buffers[8];
  long length = args.length > 0 ? args.length : 1; /* LiteRT cannot return an empty tensor: one id, dropped */
  for (LrIndex i = 0; i < num_inputs; i++) {
    const char* name;
    CHECK(LiteRtGetSignatureInputName(sig, i, &name), "an input's name");
    LrTensorType type = tensor_type(sig, i, 0, name, model_path);
    host_tensor(&type, &inputs[i]);
    in_buffers[i] = inputs[i].buffer;
    int* ints = inputs[i].data;
    float* floats = inputs[i].data;
    int is_float = type.element_type == LR_FLOAT32;
    if (strcmp(name, "prompt_ids") == 0) {
      if (type.layout.rank != 2 || type.layout.dimensions[1] != m.prompt)
        fail(RUN_ERROR, "%s: prompt_ids is not [1, %ld] as the manifest says", model_path, m.prompt);
      memcpy(ints, prompt_ids, sizeof(int) * (size_t)kept);
    } else if (strcmp(name, "stop_ids") == 0) {
      if (type.layout.rank != 3 || type.layout.dimensions[1] != m.stops || type.layout.dimensions[2] != m.stop)
        fail(RUN_ERROR, "%s: stop_ids is not [1, %ld, %ld] as the manifest says", model_path, m.stops, m.stop);
      memcpy(ints, stop_ids, sizeof(int) * (size_t)(m.stops * m.stop));
    } else if (strcmp(name, "max_new_chars") == 0) ints[0] = (int)length;
    else if (strcmp(name, "seed") == 0) ints[0] = (int)args.seed;
    else if (strcmp(name, "temperature") == 0) floats[0] = (float)args.temperature;
    else if (strcmp(name, "top_k") == 0) ints[0] = (int)args.top_k;
    else if (strcmp(name, "top_p") == 0) floats[0] = (float)args.top_p;
    else if (strcmp(name, "repetition_penalty") == 0) floats[0] = (float)args.repetition_penalty;
    else { /* a setting this program has no flag for: its off value, from the manifest */
      int found = 0;
      for (int k = 0; k < m.num_inputs; k++) {
        if (strcmp(m.inputs[k].name, name) != 0) continue;
        if (is_float) floats[0] = (float)m.inputs[k].off;
        else ints[0] = (int)m.inputs[k].off;
        found = 1;
      }
      if (!found) fail(RUN_ERROR, "%s: input '%s' is not in the manifest", model_path, name);
    }
  }
  int ids_index = -1, seed_index = -1;
  for (LrIndex i = 0; i < num_outputs; i++) {
    const char* name;
    CHECK(LiteRtGetSignatureOutputName(sig, i, &name), "an output's name");
    LrTensorType type = tensor_type(sig, i, 1, name, model_path);
    host_tensor(&type, &outputs[i]);
    out_buffers[i] = outputs[i].buffer;
    if (strcmp(name, "ids") == 0) {
      ids_index = (int)i;
      if (type.layout.rank != 2 || type.layout.dimensions[1] != m.new_ids)
        fail(RUN_ERROR, "%s: ids is not [1, %ld] as the manifest says", model_path, m.new_ids);
    }
    if (strcmp(name, "seed") == 0) seed_index = (int)i;
  }
  if (ids_index < 0 || seed_index < 0) fail(RUN_ERROR, "%s: no ids or seed output", model_path);
  CHECK(LiteRtRunCompiledModel(compiled, sig_index, num_inputs, in_buffers, num_outputs, out_buffers), "generating");

  const int* ids = outputs[ids_index].data;
  long count = 0;
  while (count < args.length && ids[count] > 0 && ids[count] <= m.num_tokens) count++;
  print_text(&m, args.prompt, prev, ids, count);
  fflush(stdout);
  if (args.seed < 0) fprintf(real_stderr ? real_stderr : stderr, "seed: %d (the same --seed gives the same text)\n", ((int*)outputs[seed_index].data)[0]);

  for (LrIndex i = 0; i < num_inputs; i++) { LiteRtDestroyTensorBuffer(inputs[i].buffer); free(inputs[i].data); }
  for (LrIndex i = 0; i < num_outputs; i++) { LiteRtDestroyTensorBuffer(outputs[i].buffer); free(outputs[i].data); }
  LiteRtDestroyCompiledModel(compiled);
  LiteRtDestroyOptions(options);
  LiteRtDestroyModel(model);
  LiteRtDestroyEnvironment(env);
  if (real_stderr) fflush(real_stderr);
  if (ferror(stdout)) fail(RUN_ERROR, "cannot write the text: %s", strerror(errno));
  return 0; /* LiteRT's log lines at exit still go to the captured log */
}
