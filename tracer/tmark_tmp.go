package tracer

import (
	"fmt"
	"os"
	"time"
)

var tmarkStart = time.Now()

func TMark(s string) {
	if os.Getenv("PKTFATE_TMARK") != "" {
		fmt.Fprintf(os.Stderr, "tmark %6.1fms %s\n", float64(time.Since(tmarkStart).Microseconds())/1000, s)
	}
}
