package main

import (
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"strings"
)

// CRIU's command line: gocr run under the name criu (a link, `make install` makes one) takes
// CRIU's flags for dump, pre-dump, restore, check, swrk and --version, so that scripts and
// tools that run criu (OpenJDK CRaC: `criu dump -t PID -D DIR --shell-job -v4 -o dump4.log`)
// work. Most of gocr's flags are CRIU's already; criuArgs turns the others into gocr's.

// criuVerbosity is CRIU's -vN / --verbosity=N: the log file gets everything anyway.
var criuVerbosity = regexp.MustCompile(`^(-v[0-9]+|--verbosity(=[0-9]+)?|-vvvv?)$`)

// criuArgs turns a criu command line into gocr's. The log file (-o) is relative to the work
// directory (-W), which is the images directory (-D) unless given, as in CRIU.
func criuArgs(args []string, out io.Writer) ([]string, bool) {
	var gocr []string
	logFile, workDir, imagesDir := "", "", ""
	takes := func(i int) (string, int) { // the value of flag i: "--x=v" or "--x v"
		if k := strings.IndexByte(args[i], '='); k > 0 && strings.HasPrefix(args[i], "--") {
			return args[i][k+1:], i
		}
		if i+1 < len(args) {
			return args[i+1], i + 1
		}
		return "", i
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, _, _ := strings.Cut(a, "=")
		switch {
		case a == "--version" || a == "-V":
			fmt.Fprintf(out, "Version: %d.%d\nGitID: gocr\n", swrkVersion.GetMajorNumber(), swrkVersion.GetMinorNumber())
			return nil, true
		case criuVerbosity.MatchString(a):
		case name == "-o" || name == "--log-file":
			logFile, i = takes(i)
		case name == "-W" || name == "--work-dir":
			workDir, i = takes(i)
		case name == "-D" || name == "--images-dir":
			imagesDir, i = takes(i)
			gocr = append(gocr, "-D", imagesDir)
		case name == "--display-stats", name == "--log-pid", name == "--external-unix-sk=false":
			// Output only.
		case a == "dump" || a == "pre-dump":
			// CRIU writes into the directory it is given, beside what is there (its log).
			gocr = append(gocr, a, "--into-dir")
		default:
			gocr = append(gocr, a)
		}
	}
	if logFile != "" && logFile != "-" {
		if !filepath.IsAbs(logFile) {
			dir := workDir
			if dir == "" {
				dir = imagesDir
			}
			logFile = filepath.Join(dir, logFile)
		}
		gocr = append([]string{"--log-file", logFile}, gocr...)
	}
	return gocr, false
}
