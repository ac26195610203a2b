package main

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
)

// describeFS names the file system that holds path, for the report:
// type, device, mount options, and for ext4 whether it has a journal
// (without one, ext4 skips recently freed inodes when it creates files,
// which makes file creation slower after many deletions).
func describeFS(path string) string {
	path, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "unknown file system"
	}
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return "unknown file system"
	}
	defer f.Close()
	var best []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 {
			continue
		}
		mnt := strings.ReplaceAll(fields[1], `\040`, " ")
		if (path == mnt || strings.HasPrefix(path, strings.TrimSuffix(mnt, "/")+"/")) &&
			(best == nil || len(mnt) >= len(best[1])) {
			best = fields
		}
	}
	if best == nil {
		return "unknown file system"
	}
	desc := best[2] + " on " + best[0] + " (" + best[3] + ")"
	if best[2] == "ext4" {
		dev := filepath.Base(best[0])
		if _, err := os.Stat("/proc/fs/jbd2/" + dev + "-8"); err == nil {
			desc += ", with journal"
		} else {
			desc += ", no journal"
		}
	}
	return desc
}
