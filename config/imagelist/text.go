package imagelist

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
)

// ParseText parses the plain text form (images-list.txt):
//
//	##k8s-images                  a section header
//	# a comment                   ignored, as are blank lines
//	kubesphere/pause:3.2          docker.io/kubesphere/pause:3.2
//	alpine                        docker.io/library/alpine:latest
//	localhost:5000/app:1 # mine   a trailing comment after whitespace
//	quay.io/x/y:1@sha256:...      tag and digest are both kept
//
// Lines may end in CRLF, a leading UTF-8 byte order mark is ignored and
// surrounding whitespace is trimmed. name is used in [Source] and in problem
// messages.
//
// ParseText always returns a non-nil List with everything that parsed. A bad
// line is recorded in List.Problems and does not stop the parse; the error
// is [List.Err]: nil when there are no problems.
func ParseText(name string, r io.Reader) (*List, error) {
	l := newList()
	l.Format = FormatText
	sc := newLineScanner(r)
	section := ""
	for {
		line, err := sc.next()
		src := Source{File: name, Line: sc.line}
		switch {
		case errors.Is(err, io.EOF):
			return l, l.Err()
		case err != nil:
			l.problem(src, err)
		default:
			section = parseTextLine(l, line, section, src)
		}
	}
}

// parseTextLine handles one line and returns the section in force after it.
func parseTextLine(l *List, line, section string, src Source) string {
	line = strings.TrimSpace(line)
	switch {
	case line == "":
		return section
	case strings.HasPrefix(line, "##"):
		section = strings.TrimSpace(line[2:])
		if section != "" {
			l.addSection(section)
		}
		return section
	case strings.HasPrefix(line, "#"):
		return section
	}
	ref, err := parseRef(stripComment(line))
	if err != nil {
		l.problem(src, err)
		return section
	}
	ref.Section, ref.Source = section, src
	l.addRef(ref)
	return section
}

// stripComment removes a trailing comment: a "#" after a space or tab. A
// "#" glued to the reference is left in, so that it is reported.
func stripComment(line string) string {
	for i := 1; i < len(line); i++ {
		if line[i] == '#' && (line[i-1] == ' ' || line[i-1] == '\t') {
			return strings.TrimSpace(line[:i])
		}
	}
	return line
}

// lineScanner reads lines of at most MaxLineLength bytes, reporting longer
// ones as errors without losing its place, and stops after MaxInputSize.
type lineScanner struct {
	br    *bufio.Reader
	line  int   // 1-based number of the line last returned
	total int64 // bytes consumed
	err   error // error to return on the next call
}

// newLineScanner returns a lineScanner reading r.
func newLineScanner(r io.Reader) *lineScanner {
	return &lineScanner{br: bufio.NewReaderSize(r, MaxLineLength+2)}
}

// next returns the next line without its line ending and without a leading
// byte order mark on line 1. At the end it returns io.EOF; a line that is
// too long yields ErrLineTooLong, a failing reader ErrRead.
func (s *lineScanner) next() (string, error) {
	if err := s.err; err != nil {
		s.err = io.EOF // report a read error once, then stop
		return "", err
	}
	b, err := s.br.ReadSlice('\n')
	s.total += int64(len(b))
	if len(b) == 0 && err != nil {
		return "", s.fail(err)
	}
	s.line++
	if errors.Is(err, bufio.ErrBufferFull) {
		return "", s.skipLine()
	}
	if err != nil {
		s.err = s.fail(err)
	}
	if s.total > MaxInputSize {
		return "", s.tooLarge()
	}
	line := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if s.line == 1 {
		line = strings.TrimPrefix(line, "\ufeff")
	}
	return line, nil
}

// skipLine discards the rest of an overlong line and returns ErrLineTooLong.
func (s *lineScanner) skipLine() error {
	for {
		b, err := s.br.ReadSlice('\n')
		s.total += int64(len(b))
		if s.total > MaxInputSize {
			return s.tooLarge()
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			s.err = s.fail(err)
		}
		return fmt.Errorf("%w: more than %d bytes", ErrLineTooLong, MaxLineLength)
	}
}

// tooLarge stops the scan and returns ErrInputTooLarge.
func (s *lineScanner) tooLarge() error {
	s.err = io.EOF
	return fmt.Errorf("%w: more than %d bytes", ErrInputTooLarge, MaxInputSize)
}

// fail maps a read error to io.EOF or an ErrRead wrapper.
func (s *lineScanner) fail(err error) error {
	if errors.Is(err, io.EOF) {
		return io.EOF
	}
	return fmt.Errorf("%w: %w", ErrRead, err)
}
