/*
 * arena_intern.c - a bump-pointer arena allocator and a string interner built on top of it.
 *
 * An arena hands out memory from large blocks and frees everything at once, which suits compilers
 * and parsers: every node of a syntax tree lives exactly as long as the compilation unit. The
 * interner maps equal strings to one canonical pointer, so later comparisons are pointer compares.
 * It uses open addressing with linear probing and FNV-1a hashing, and grows at 70% load.
 *
 *   cc -std=c11 -O2 -Wall -Wextra arena_intern.c -o arena_intern && ./arena_intern < some_file.txt
 */
#include <assert.h>
#include <ctype.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena --------------------------------------------------------------------------------- */

typedef struct ArenaBlock {
    struct ArenaBlock *next;
    size_t capacity;
    size_t used;
    alignas(max_align_t) unsigned char data[];
} ArenaBlock;

typedef struct {
    ArenaBlock *head;
    size_t default_block_size;
    size_t total_allocated; /* bytes handed out to callers */
    size_t n_blocks;
} Arena;

static void arena_init(Arena *a, size_t default_block_size) {
    a->head = NULL;
    a->default_block_size = default_block_size ? default_block_size : 64 * 1024;
    a->total_allocated = 0;
    a->n_blocks = 0;
}

static size_t align_up(size_t n, size_t alignment) {
    return (n + alignment - 1) & ~(alignment - 1);
}

/* Returns `size` bytes aligned to `alignment` (a power of two no larger than max_align_t). */
static void *arena_alloc_aligned(Arena *a, size_t size, size_t alignment) {
    assert(alignment && (alignment & (alignment - 1)) == 0 && alignment <= alignof(max_align_t));
    ArenaBlock *b = a->head;
    if (b) {
        size_t offset = align_up(b->used, alignment);
        if (offset + size <= b->capacity) {
            b->used = offset + size;
            a->total_allocated += size;
            return b->data + offset;
        }
    }
    /* Oversized requests get a block of their own so they do not waste the default size. */
    size_t capacity = size > a->default_block_size ? size : a->default_block_size;
    ArenaBlock *fresh = malloc(sizeof(ArenaBlock) + capacity);
    if (!fresh) {
        fprintf(stderr, "arena: out of memory allocating %zu bytes\n", capacity);
        abort();
    }
    fresh->capacity = capacity;
    fresh->used = size;
    fresh->next = a->head;
    a->head = fresh;
    a->n_blocks++;
    a->total_allocated += size;
    return fresh->data;
}

static void *arena_alloc(Arena *a, size_t size) {
    return arena_alloc_aligned(a, size, alignof(max_align_t));
}

static char *arena_strndup(Arena *a, const char *s, size_t n) {
    char *copy = arena_alloc_aligned(a, n + 1, 1);
    memcpy(copy, s, n);
    copy[n] = '\0';
    return copy;
}

static void arena_free(Arena *a) {
    ArenaBlock *b = a->head;
    while (b) {
        ArenaBlock *next = b->next;
        free(b);
        b = next;
    }
    a->head = NULL;
    a->n_blocks = 0;
    a->total_allocated = 0;
}

/* ---- interner ------------------------------------------------------------------------------ */

typedef struct {
    const char *str; /* NULL marks an empty slot */
    size_t len;
    uint64_t hash;
    size_t count; /* how many times this string was interned */
} InternSlot;

typedef struct {
    Arena *arena;
    InternSlot *slots;
    size_t capacity; /* always a power of two */
    size_t size;
} Interner;

static uint64_t fnv1a(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static void interner_init(Interner *in, Arena *arena) {
    in->arena = arena;
    in->capacity = 64;
    in->size = 0;
    in->slots = calloc(in->capacity, sizeof(InternSlot));
    if (!in->slots) abort();
}

static void interner_grow(Interner *in) {
    size_t new_capacity = in->capacity * 2;
    InternSlot *fresh = calloc(new_capacity, sizeof(InternSlot));
    if (!fresh) abort();
    for (size_t i = 0; i < in->capacity; i++) {
        InternSlot s = in->slots[i];
        if (!s.str) continue;
        size_t j = s.hash & (new_capacity - 1);
        while (fresh[j].str) j = (j + 1) & (new_capacity - 1);
        fresh[j] = s;
    }
    free(in->slots);
    in->slots = fresh;
    in->capacity = new_capacity;
}

/* Returns the canonical copy of s[0..n). Equal inputs give the same pointer. */
static const char *intern(Interner *in, const char *s, size_t n) {
    if ((in->size + 1) * 10 > in->capacity * 7) interner_grow(in);
    uint64_t h = fnv1a(s, n);
    size_t j = h & (in->capacity - 1);
    while (in->slots[j].str) {
        InternSlot *slot = &in->slots[j];
        if (slot->hash == h && slot->len == n && memcmp(slot->str, s, n) == 0) {
            slot->count++;
            return slot->str;
        }
        j = (j + 1) & (in->capacity - 1);
    }
    in->slots[j].str = arena_strndup(in->arena, s, n);
    in->slots[j].len = n;
    in->slots[j].hash = h;
    in->slots[j].count = 1;
    in->size++;
    return in->slots[j].str;
}

static void interner_free(Interner *in) {
    free(in->slots);
    in->slots = NULL;
    in->capacity = in->size = 0;
}

/* ---- demo: count identifiers in a source file ---------------------------------------------- */

static int compare_by_count(const void *pa, const void *pb) {
    const InternSlot *a = pa, *b = pb;
    if (a->count != b->count) return a->count < b->count ? 1 : -1;
    return strcmp(a->str, b->str);
}

static void self_test(void) {
    Arena arena;
    arena_init(&arena, 256);
    Interner in;
    interner_init(&in, &arena);
    const char *a = intern(&in, "alpha", 5);
    const char *b = intern(&in, "alphabet", 5); /* same first five bytes */
    const char *c = intern(&in, "beta", 4);
    assert(a == b);
    assert(a != c);
    assert(strcmp(c, "beta") == 0);
    /* Force several rehashes and several arena blocks. */
    char name[32];
    for (int i = 0; i < 5000; i++) {
        int len = snprintf(name, sizeof name, "sym_%d", i % 1000);
        intern(&in, name, (size_t)len);
    }
    assert(in.size == 1002);
    assert(arena.n_blocks > 1);
    /* Alignment of general allocations. */
    for (int i = 1; i < 100; i++) {
        void *p = arena_alloc(&arena, (size_t)i);
        assert(((uintptr_t)p % alignof(max_align_t)) == 0);
    }
    interner_free(&in);
    arena_free(&arena);
}

int main(int argc, char **argv) {
    self_test();

    FILE *f = stdin;
    if (argc > 1 && !(f = fopen(argv[1], "rb"))) {
        perror(argv[1]);
        return 1;
    }
    Arena arena;
    arena_init(&arena, 0);
    Interner in;
    interner_init(&in, &arena);

    char word[256];
    size_t len = 0;
    size_t total = 0;
    int ch;
    while ((ch = fgetc(f)) != EOF) {
        if (isalnum(ch) || ch == '_') {
            if (len + 1 < sizeof word) word[len++] = (char)ch;
            continue;
        }
        if (len > 0 && !isdigit((unsigned char)word[0])) {
            intern(&in, word, len);
            total++;
        }
        len = 0;
    }
    if (len > 0 && !isdigit((unsigned char)word[0])) {
        intern(&in, word, len);
        total++;
    }
    if (f != stdin) fclose(f);

    /* Copy the occupied slots out so they can be sorted by frequency. */
    InternSlot *sorted = malloc(in.size * sizeof(InternSlot) + 1);
    size_t n = 0;
    for (size_t i = 0; i < in.capacity; i++)
        if (in.slots[i].str) sorted[n++] = in.slots[i];
    qsort(sorted, n, sizeof(InternSlot), compare_by_count);

    printf("%zu identifiers, %zu distinct, %zu bytes of strings in %zu arena block(s)\n", total, n,
           arena.total_allocated, arena.n_blocks);
    for (size_t i = 0; i < n && i < 15; i++) printf("%8zu  %s\n", sorted[i].count, sorted[i].str);

    free(sorted);
    interner_free(&in);
    arena_free(&arena);
    return 0;
}
