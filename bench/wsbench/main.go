// Command wsbench is codehub's WebSocket load tool: an echo upstream and two clients, with
// RFC 6455 framing written by hand so that nothing is downloaded.
//
//	wsbench echo --unix PATH --tcp 127.0.0.1:PORT
//	wsbench rtt  --url ws://127.0.0.1:PORT/path --conns N --duration S --size B [--header 'K: V']...
//	wsbench hold --url ws://127.0.0.1:PORT/path --conns N [--header 'K: V']...
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "echo":
		err = cmdEcho(os.Args[2:])
	case "rtt":
		err = cmdRTT(os.Args[2:])
	case "hold":
		err = cmdHold(os.Args[2:])
	case "-h", "--help", "help":
		usage()
	default:
		fmt.Fprintf(os.Stderr, "wsbench: unknown command %q\n", os.Args[1])
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "wsbench %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  wsbench echo --unix PATH --tcp 127.0.0.1:PORT
  wsbench rtt  --url ws://127.0.0.1:PORT/path --conns N --duration S --size B [--header 'K: V']...
  wsbench hold --url ws://127.0.0.1:PORT/path --conns N [--parallel P] [--echo B]
               [--header 'K: V']...
`)
	os.Exit(2)
}
