// Package asciifold compares bytes with lower-case ASCII without regard
// to the case of ASCII letters: the fast path of header-name lookups and
// literal searches, where strings.EqualFold's Unicode folding is handled
// apart.
package asciifold

// Equal reports whether b equals lower, a lower-case ASCII string,
// ignoring the case of the ASCII letters in b. b and lower must be of the
// same length.
func Equal(b, lower []byte) bool {
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}
