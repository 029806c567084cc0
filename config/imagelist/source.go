package imagelist

import "strconv"

// Source says where an entry came from: a file name and a 1-based line.
type Source struct {
	// File is the name the input was parsed under.
	File string
	// Line is the 1-based line number; 0 means the whole file.
	Line int
}

// String returns "file:line", or just "file" when Line is 0.
func (s Source) String() string {
	if s.Line <= 0 {
		return s.File
	}
	return s.File + ":" + strconv.Itoa(s.Line)
}
