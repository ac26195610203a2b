package mailfmt

// PipeBytes is what procmail writes to a program (a pipe, a filter, a
// condition program): the message with the Content-Length rewrite and the
// trailing newline rule, nothing escaped.
func PipeBytes(msg []byte, berkeley bool) []byte {
	data, _ := prepare(msg, berkeley)
	return forceBlank(data)
}

// ForwardBytes is what procmail hands to sendmail for a forward: PipeBytes
// without the From_ line.
func ForwardBytes(msg []byte, berkeley bool) []byte {
	data, _ := prepare(msg, berkeley)
	return forceBlank(skipFromLine(data))
}

// ContentLengthFixed returns msg with procmail's read-time Content-Length
// rewrite applied (a copy).
func ContentLengthFixed(msg []byte, berkeley bool) []byte {
	data, _ := prepare(msg, berkeley)
	return data
}
