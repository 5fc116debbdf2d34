// Command smux-go-peer runs Go smux (Debian's golang-github-xtaci-smux-dev, the version
// Debian's kcptun uses) against nodelink-smux in its interop tests. It is built in GOPATH
// mode by scripts/build-smux-go-peer.sh.
//
//	smux-go-peer echo-server --ver N [--streambuf B]
//	    listens on 127.0.0.1 (a free port), prints "listening on ADDR", accepts one TCP
//	    connection, runs smux.Server over it and echoes every stream until the peer closes
//	    it; exits when the session ends.
//	smux-go-peer client --connect ADDR --ver N --streams K --bytes M [--streambuf B]
//	    runs smux.Client, opens K streams at once, writes M pseudo-random bytes on each
//	    while reading the echo, checks it byte for byte and closes the stream; prints
//	    "ok" and exits 0, or prints the failure and exits 1.
//
// Every run is bounded: the process exits with status 2 after --timeout seconds.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"sync"
	"time"

	"github.com/xtaci/smux"
)

func config(ver, streambuf int) *smux.Config {
	c := smux.DefaultConfig()
	c.Version = ver
	if streambuf > 0 {
		c.MaxStreamBuffer = streambuf
	}
	if err := smux.VerifyConfig(c); err != nil {
		fail("config: %v", err)
	}
	return c
}

func fail(format string, args ...interface{}) {
	fmt.Printf("FAIL "+format+"\n", args...)
	os.Exit(1)
}

func echoServer(ver, streambuf int) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail("listen: %v", err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	conn, err := ln.Accept()
	if err != nil {
		fail("accept: %v", err)
	}
	sess, err := smux.Server(conn, config(ver, streambuf))
	if err != nil {
		fail("server: %v", err)
	}
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			fmt.Printf("session ended: %v\n", err)
			return
		}
		go func(st *smux.Stream) {
			defer st.Close()
			buf := make([]byte, 16384)
			for {
				n, err := st.Read(buf)
				if n > 0 {
					if _, werr := st.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}(st)
	}
}

func client(addr string, ver, streambuf, streams, size int) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		fail("dial: %v", err)
	}
	sess, err := smux.Client(conn, config(ver, streambuf))
	if err != nil {
		fail("client: %v", err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for i := 0; i < streams; i++ {
		data := make([]byte, size)
		rand.New(rand.NewSource(int64(i + 1))).Read(data)
		st, err := sess.OpenStream()
		if err != nil {
			fail("open: %v", err)
		}
		wg.Add(1)
		go func(st *smux.Stream, data []byte) {
			defer wg.Done()
			defer st.Close()
			go func() {
				for off := 0; off < len(data); off += 10000 {
					end := off + 10000
					if end > len(data) {
						end = len(data)
					}
					if _, err := st.Write(data[off:end]); err != nil {
						return
					}
				}
			}()
			got := make([]byte, len(data))
			if _, err := io.ReadFull(st, got); err != nil {
				errs <- fmt.Errorf("stream %d: read: %v", st.ID(), err)
				return
			}
			if !bytes.Equal(got, data) {
				errs <- fmt.Errorf("stream %d: echo differs", st.ID())
			}
		}(st, data)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		fail("%v", err)
	}
	sess.Close()
	fmt.Println("ok")
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: smux-go-peer echo-server|client [flags]")
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	ver := fs.Int("ver", 1, "smux version")
	streambuf := fs.Int("streambuf", 0, "MaxStreamBuffer (0: default)")
	connect := fs.String("connect", "", "server address (client)")
	streams := fs.Int("streams", 4, "parallel streams (client)")
	size := fs.Int("bytes", 1<<20, "bytes per stream (client)")
	timeout := fs.Int("timeout", 60, "seconds before giving up")
	if err := fs.Parse(os.Args[2:]); err != nil {
		fail("%v", err)
	}
	time.AfterFunc(time.Duration(*timeout)*time.Second, func() {
		fmt.Println("FAIL timeout")
		os.Exit(2)
	})
	switch os.Args[1] {
	case "echo-server":
		echoServer(*ver, *streambuf)
	case "client":
		client(*connect, *ver, *streambuf, *streams, *size)
	default:
		fail("unknown mode %q", os.Args[1])
	}
}
