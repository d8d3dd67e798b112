// kvlog.go - a tiny persistent key-value store built on an append-only log.
//
// Every Put or Delete appends one record to the log file:
//
//	crc32 (4 bytes, big endian) | kind (1 byte) | key length (uvarint) | value length (uvarint) | key | value
//
// An in-memory map holds the latest value of every live key, rebuilt by replaying the log at open.
// A torn final record (a crash mid-write) fails its checksum and is truncated away; corruption
// anywhere else is reported as an error rather than silently skipped. Compact rewrites the live
// keys into a fresh file and renames it over the old one, so a crash during compaction leaves
// the previous log intact.
//
// Usage:
//
//	go run kvlog.go put  data.log name adapt
//	go run kvlog.go get  data.log name
//	go run kvlog.go del  data.log name
//	go run kvlog.go dump data.log
//	go run kvlog.go compact data.log
package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sort"
	"sync"
)

const (
	kindPut    byte = 1
	kindDelete byte = 2
	maxKeyLen       = 1 << 16
	maxValueLen     = 1 << 26
)

// ErrNotFound is returned by Get for a key that was never written or has been deleted.
var ErrNotFound = errors.New("key not found")

// Store is safe for concurrent use by multiple goroutines.
type Store struct {
	mu      sync.RWMutex
	path    string
	file    *os.File
	writer  *bufio.Writer
	data    map[string][]byte
	garbage int // records in the log that no longer describe a live value
}

// Open replays the log at path, creating it when missing.
func Open(path string) (*Store, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	s := &Store{path: path, file: f, data: make(map[string][]byte)}
	validEnd, err := s.replay()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	// Drop a torn tail so new records are appended after the last good one.
	if err := f.Truncate(validEnd); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.Seek(validEnd, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	s.writer = bufio.NewWriter(f)
	return s, nil
}

// replay reads every record and returns the offset just past the last valid one.
func (s *Store) replay() (int64, error) {
	if _, err := s.file.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	r := bufio.NewReader(s.file)
	var offset int64
	for {
		kind, key, value, n, err := readRecord(r)
		if err == io.EOF {
			return offset, nil
		}
		if errors.Is(err, errTorn) {
			// Only acceptable at the very end of the file: check nothing follows.
			if _, peekErr := r.Peek(1); peekErr == io.EOF {
				return offset, nil
			}
			return 0, fmt.Errorf("corrupt record at offset %d", offset)
		}
		if err != nil {
			return 0, err
		}
		s.apply(kind, key, value)
		offset += n
	}
}

var errTorn = errors.New("torn or corrupt record")

func readRecord(r *bufio.Reader) (kind byte, key string, value []byte, n int64, err error) {
	var header [5]byte
	if _, err = io.ReadFull(r, header[:1]); err != nil {
		return 0, "", nil, 0, err // plain io.EOF: a clean end
	}
	if _, err = io.ReadFull(r, header[1:]); err != nil {
		return 0, "", nil, 0, errTorn
	}
	sum := binary.BigEndian.Uint32(header[:4])
	kind = header[4]
	var lengths [2 * binary.MaxVarintLen64]byte
	lengthBytes := lengths[:0]
	readLen := func() (uint64, error) {
		v, err := binary.ReadUvarint(byteRecorder{r, &lengthBytes})
		if err != nil {
			return 0, errTorn
		}
		return v, nil
	}
	keyLen, err := readLen()
	if err != nil {
		return 0, "", nil, 0, err
	}
	valueLen, err := readLen()
	if err != nil {
		return 0, "", nil, 0, err
	}
	if keyLen > maxKeyLen || valueLen > maxValueLen || (kind != kindPut && kind != kindDelete) {
		return 0, "", nil, 0, errTorn
	}
	body := make([]byte, keyLen+valueLen)
	if _, err = io.ReadFull(r, body); err != nil {
		return 0, "", nil, 0, errTorn
	}
	h := crc32.NewIEEE()
	h.Write(header[4:])
	h.Write(lengthBytes)
	h.Write(body)
	if h.Sum32() != sum {
		return 0, "", nil, 0, errTorn
	}
	n = int64(len(header)) + int64(len(lengthBytes)) + int64(len(body))
	return kind, string(body[:keyLen]), body[keyLen:], n, nil
}

// byteRecorder is an io.ByteReader that also remembers the bytes it returned, so the varint
// length fields can be included in the checksum exactly as they appear on disk.
type byteRecorder struct {
	r   *bufio.Reader
	buf *[]byte
}

func (b byteRecorder) ReadByte() (byte, error) {
	c, err := b.r.ReadByte()
	if err == nil {
		*b.buf = append(*b.buf, c)
	}
	return c, err
}

func encodeRecord(kind byte, key string, value []byte) []byte {
	var body bytes.Buffer
	body.WriteByte(kind)
	var tmp [binary.MaxVarintLen64]byte
	body.Write(tmp[:binary.PutUvarint(tmp[:], uint64(len(key)))])
	body.Write(tmp[:binary.PutUvarint(tmp[:], uint64(len(value)))])
	body.WriteString(key)
	body.Write(value)
	out := make([]byte, 4, 4+body.Len())
	binary.BigEndian.PutUint32(out, crc32.ChecksumIEEE(body.Bytes()))
	return append(out, body.Bytes()...)
}

func (s *Store) apply(kind byte, key string, value []byte) {
	if _, existed := s.data[key]; existed {
		s.garbage++
	}
	if kind == kindDelete {
		delete(s.data, key)
		s.garbage++ // the tombstone itself is garbage once applied
		return
	}
	s.data[key] = value
}

func (s *Store) appendRecord(kind byte, key string, value []byte) error {
	if len(key) == 0 || len(key) > maxKeyLen {
		return fmt.Errorf("key length %d outside 1..%d", len(key), maxKeyLen)
	}
	if len(value) > maxValueLen {
		return fmt.Errorf("value of %d bytes exceeds the %d byte limit", len(value), maxValueLen)
	}
	if _, err := s.writer.Write(encodeRecord(kind, key, value)); err != nil {
		return err
	}
	if err := s.writer.Flush(); err != nil {
		return err
	}
	if err := s.file.Sync(); err != nil {
		return err
	}
	s.apply(kind, key, value)
	return nil
}

// Put stores value under key, durably (the log is fsynced before Put returns).
func (s *Store) Put(key string, value []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.appendRecord(kindPut, key, append([]byte(nil), value...))
}

// Delete removes key; deleting a missing key is not an error.
func (s *Store) Delete(key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.data[key]; !ok {
		return nil
	}
	return s.appendRecord(kindDelete, key, nil)
}

// Get returns a copy of the value stored under key.
func (s *Store) Get(key string) ([]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := s.data[key]
	if !ok {
		return nil, ErrNotFound
	}
	return append([]byte(nil), v...), nil
}

// Keys returns the live keys in sorted order.
func (s *Store) Keys() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	keys := make([]string, 0, len(s.data))
	for k := range s.data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Compact rewrites the log with one record per live key.
func (s *Store) Compact() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	tmpPath := s.path + ".compact"
	tmp, err := os.OpenFile(tmpPath, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(tmp)
	keys := make([]string, 0, len(s.data))
	for k := range s.data {
		keys = append(keys, k)
	}
	sort.Strings(keys) // deterministic file contents
	for _, k := range keys {
		if _, err := w.Write(encodeRecord(kindPut, k, s.data[k])); err != nil {
			tmp.Close()
			os.Remove(tmpPath)
			return err
		}
	}
	if err := w.Flush(); err != nil {
		tmp.Close()
		os.Remove(tmpPath)
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		os.Remove(tmpPath)
		return err
	}
	if err := os.Rename(tmpPath, s.path); err != nil {
		tmp.Close()
		os.Remove(tmpPath)
		return err
	}
	s.file.Close()
	s.file = tmp
	s.writer = bufio.NewWriter(tmp)
	s.garbage = 0
	return nil
}

// Close flushes and closes the log file.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.writer.Flush(); err != nil {
		return err
	}
	return s.file.Close()
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: kvlog (put FILE KEY VALUE | get FILE KEY | del FILE KEY | dump FILE | compact FILE)")
	os.Exit(2)
}

func main() {
	if len(os.Args) < 3 {
		usage()
	}
	cmd, path := os.Args[1], os.Args[2]
	store, err := Open(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
	defer store.Close()

	switch {
	case cmd == "put" && len(os.Args) == 5:
		err = store.Put(os.Args[3], []byte(os.Args[4]))
	case cmd == "get" && len(os.Args) == 4:
		var v []byte
		v, err = store.Get(os.Args[3])
		if err == nil {
			fmt.Println(string(v))
		}
	case cmd == "del" && len(os.Args) == 4:
		err = store.Delete(os.Args[3])
	case cmd == "dump" && len(os.Args) == 3:
		for _, k := range store.Keys() {
			v, _ := store.Get(k)
			fmt.Printf("%s\t%q\n", k, v)
		}
		fmt.Fprintf(os.Stderr, "%d live keys, %d garbage records\n", len(store.Keys()), store.garbage)
	case cmd == "compact" && len(os.Args) == 3:
		err = store.Compact()
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
