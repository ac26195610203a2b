package main

import "github.com/mfilter/mfilter/bench"

// buildSpool makes a spool of about size bytes. From -spool-corpus it
// takes each message once, in order, and stops at the corpus's end even
// if that is short of size: cycling a corpus repeats it within zstd's
// window, which then compresses the repeats to nearly nothing and makes
// the transfer look far better than on real mail (bench/FETCH.md). From
// -corpus (the small test corpus) it cycles, as before.
func (o *fetchOptions) buildSpool(msgs []bench.Message, size int64) ([]byte, int) {
	if o.spoolCorpus == "" {
		return fetchBuildSpool(msgs, size)
	}
	var out []byte
	n := 0
	for n < len(msgs) && int64(len(out)) < size {
		out = append(out, msgs[n].Entry...)
		n++
	}
	return out, n
}
