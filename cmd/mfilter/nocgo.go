//go:build !cgo

package main

// withCgo is set when the binary uses the C library's threads, each of
// which reserves a stack of RLIMIT_STACK bytes of address space.
const withCgo = false
