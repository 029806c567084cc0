package imagelist

import (
	"bytes"
	"encoding/json"
	"iter"
)

// document is one YAML document of a stream and the 1-based line it
// starts on.
type document struct {
	text []byte
	line int
}

// documents yields the documents of a Kubernetes input, in order: the
// parts between its "---" lines (see splitDocuments), and each JSON value
// of a part holding several one after the other, as "jq -c '.items[]'"
// prints them (see splitJSON). It yields lazily, so a caller that stops
// early never walks the rest of a large input.
func documents(data []byte) iter.Seq[document] {
	return func(yield func(document) bool) {
		for d := range splitDocuments(data) {
			for part := range splitJSON(d) {
				if !yield(part) {
					return
				}
			}
		}
	}
}

// splitDocuments cuts a YAML stream at its "---" lines, so that a
// malformed document does not stop the ones after it (a YAML decoder
// cannot resume after a syntax error). Each part keeps its "---" line, so
// "--- {...}" and "--- # comment" still decode. Input in UTF-16 (a byte
// order mark) is left whole.
func splitDocuments(data []byte) iter.Seq[document] {
	return func(yield func(document) bool) {
		if len(data) >= 2 && (data[0] == 0xfe && data[1] == 0xff || data[0] == 0xff && data[1] == 0xfe) {
			yield(document{text: data, line: 1})
			return
		}
		start, startLine, line := 0, 1, 1
		for pos := 0; pos < len(data); line++ {
			end := bytes.IndexByte(data[pos:], '\n')
			next := len(data)
			if end >= 0 {
				next = pos + end + 1
			}
			if pos > 0 && isDocumentStart(data[pos:next]) {
				if !yield(document{text: data[start:pos], line: startLine}) {
					return
				}
				start, startLine = pos, line
			}
			pos = next
		}
		yield(document{text: data[start:], line: startLine})
	}
}

// isDocumentStart reports whether line is a "---" marker: at column 0,
// followed by the end of the line or a blank.
func isDocumentStart(line []byte) bool {
	rest, ok := bytes.CutPrefix(line, []byte("---"))
	return ok && (len(rest) == 0 || rest[0] == ' ' || rest[0] == '\t' || rest[0] == '\n' || rest[0] == '\r')
}

// splitJSON cuts a document that starts with "{" at the end of each
// top-level JSON value, each part starting on its value's line. A document
// that is not JSON from its start is yielded whole (and decoded, or
// reported, as YAML); after a value that does not decode, the rest is one
// part.
func splitJSON(d document) iter.Seq[document] {
	return func(yield func(document) bool) {
		if t := bytes.TrimLeft(d.text, " \t\r\n"); len(t) == 0 || t[0] != '{' {
			yield(d)
			return
		}
		dec := json.NewDecoder(bytes.NewReader(d.text))
		start, line := 0, d.line
		for first := true; ; first = false {
			skip := len(d.text[start:]) - len(bytes.TrimLeft(d.text[start:], " \t\r\n"))
			if !first {
				line += bytes.Count(d.text[start:start+skip], []byte("\n"))
				start += skip
			}
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				if rest := d.text[start:]; len(bytes.TrimSpace(rest)) > 0 {
					yield(document{text: rest, line: line})
				}
				return
			}
			end := int(dec.InputOffset())
			if !yield(document{text: d.text[start:end], line: line}) {
				return
			}
			line += bytes.Count(d.text[start:end], []byte("\n"))
			start = end
		}
	}
}

// blankDocument reports whether a document holds nothing but its markers,
// comments and blank lines, so that it need not be decoded.
func blankDocument(text []byte) bool {
	for len(text) > 0 {
		line := text
		if i := bytes.IndexByte(text, '\n'); i >= 0 {
			line, text = text[:i], text[i+1:]
		} else {
			text = nil
		}
		line = bytes.TrimSpace(line)
		for _, marker := range [][]byte{[]byte("---"), []byte("...")} {
			if rest, ok := bytes.CutPrefix(line, marker); ok && (len(rest) == 0 || rest[0] == ' ' || rest[0] == '\t') {
				line = bytes.TrimSpace(rest)
			}
		}
		if len(line) > 0 && line[0] != '#' {
			return false
		}
	}
	return true
}
