// wordfreq.go - count word frequencies across many files with a pool of worker goroutines.
//
// Files are fed to workers over a channel; each worker counts into a private map and sends it to
// a single merger when done, so the hot loop takes no locks. Words are lower-cased Unicode letter
// runs (apostrophes inside words are kept, as in "don't"). Output is the top N words, ties broken
// alphabetically so the result is deterministic regardless of scheduling.
//
// Usage:
//
//	go run wordfreq.go -top 20 -workers 4 docs/*.md
//	find . -name '*.go' | go run wordfreq.go -top 10 -stdin-list
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"unicode"
)

type result struct {
	counts map[string]int
	files  int
	errors []error
}

// countWords adds every word read from r to counts.
func countWords(r io.Reader, counts map[string]int) error {
	scanner := bufio.NewScanner(r)
	scanner.Buffer(make([]byte, 64*1024), 1024*1024)
	scanner.Split(bufio.ScanWords)
	for scanner.Scan() {
		for _, w := range splitWord(scanner.Text()) {
			counts[w]++
		}
	}
	return scanner.Err()
}

// splitWord extracts lower-cased letter runs from a whitespace-delimited field, so that
// "(hello," gives "hello" and "state-of-the-art" gives four words.
func splitWord(field string) []string {
	var words []string
	var b strings.Builder
	runes := []rune(field)
	flush := func() {
		if b.Len() > 0 {
			words = append(words, strings.Trim(b.String(), "'"))
			b.Reset()
		}
	}
	for i, r := range runes {
		switch {
		case unicode.IsLetter(r):
			b.WriteRune(unicode.ToLower(r))
		case r == '\'' && b.Len() > 0 && i+1 < len(runes) && unicode.IsLetter(runes[i+1]):
			b.WriteRune(r) // keep contractions together
		default:
			flush()
		}
	}
	flush()
	out := words[:0]
	for _, w := range words {
		if w != "" {
			out = append(out, w)
		}
	}
	return out
}

func worker(paths <-chan string, results chan<- result, wg *sync.WaitGroup) {
	defer wg.Done()
	res := result{counts: make(map[string]int)}
	for path := range paths {
		f, err := os.Open(path)
		if err != nil {
			res.errors = append(res.errors, err)
			continue
		}
		if err := countWords(f, res.counts); err != nil {
			res.errors = append(res.errors, fmt.Errorf("%s: %w", path, err))
		}
		f.Close()
		res.files++
	}
	results <- res
}

type entry struct {
	word  string
	count int
}

// topN returns the n most frequent words, most frequent first, ties in alphabetical order.
func topN(counts map[string]int, n int) []entry {
	entries := make([]entry, 0, len(counts))
	for w, c := range counts {
		entries = append(entries, entry{w, c})
	}
	sort.Slice(entries, func(i, j int) bool {
		if entries[i].count != entries[j].count {
			return entries[i].count > entries[j].count
		}
		return entries[i].word < entries[j].word
	})
	if n > 0 && len(entries) > n {
		entries = entries[:n]
	}
	return entries
}

func main() {
	top := flag.Int("top", 25, "number of words to print (0 = all)")
	workers := flag.Int("workers", runtime.NumCPU(), "number of worker goroutines")
	stdinList := flag.Bool("stdin-list", false, "read file names from standard input, one per line")
	minLen := flag.Int("min-length", 1, "ignore words shorter than this")
	flag.Parse()

	var paths []string
	if *stdinList {
		scanner := bufio.NewScanner(os.Stdin)
		for scanner.Scan() {
			if line := strings.TrimSpace(scanner.Text()); line != "" {
				paths = append(paths, line)
			}
		}
	} else {
		paths = flag.Args()
	}
	if len(paths) == 0 {
		fmt.Fprintln(os.Stderr, "wordfreq: no input files (pass paths or use -stdin-list)")
		os.Exit(2)
	}
	if *workers < 1 {
		*workers = 1
	}

	pathCh := make(chan string)
	results := make(chan result, *workers)
	var wg sync.WaitGroup
	for i := 0; i < *workers; i++ {
		wg.Add(1)
		go worker(pathCh, results, &wg)
	}
	go func() {
		for _, p := range paths {
			pathCh <- p
		}
		close(pathCh)
	}()
	go func() {
		wg.Wait()
		close(results)
	}()

	total := make(map[string]int)
	files, failed := 0, 0
	for res := range results {
		files += res.files
		for _, err := range res.errors {
			fmt.Fprintln(os.Stderr, "wordfreq:", err)
			failed++
		}
		for w, c := range res.counts {
			if len([]rune(w)) >= *minLen {
				total[w] += c
			}
		}
	}

	sum := 0
	for _, c := range total {
		sum += c
	}
	fmt.Printf("%d files, %d words, %d distinct\n", files, sum, len(total))
	for i, e := range topN(total, *top) {
		share := 100 * float64(e.count) / float64(sum)
		fmt.Printf("%4d  %-20s %8d  %5.2f%%\n", i+1, e.word, e.count, share)
	}
	if failed > 0 {
		os.Exit(1)
	}
}
