// Command kcp-go-peer is the real kcp-go peer that nodelink-kcp's interop tests talk to.
// It is built from Debian's packages in GOPATH mode by scripts/install-kcp-deps.sh.
//
//	kcp-go-peer golden
//	    JSON lines of golden vectors made by kcp-go's own code: one per cipher and payload
//	    ("kind":"cipher"), raw Reed-Solomon parity ("kind":"rs") and whole FEC groups laid
//	    out as kcp-go's fecEncoder lays them out ("kind":"fec").
//	kcp-go-peer echo-server --listen ADDR [options] [--message]
//	    prints "listening on ADDR", then echoes every stream byte (or every message).
//	kcp-go-peer client ADDR [options] --bytes N [--message]
//	    sends N pseudo-random bytes, checks the echo byte for byte, prints one JSON line
//	    with the throughput and kcp.DefaultSnmp; exits 1 on a mismatch or a time-out.
//
//	kcp-go-peer rtt ADDR [options] --count N
//	    serial 64-byte echo round trips (10 warm-up ones first), prints one JSON line with
//	    p50_us, p99_us and cpu_s (this process's user+system CPU time, getrusage).
//
// The client's JSON line also carries cpu_s (user+system CPU time of the process during
// the transfer, payload generation excluded).
//
// Options: --crypt NAME (kcptun's names, default aes) --key KEY (passphrase, default
// kcptun's) --ds N --ps M (FEC, default 10/3; 0 disables) --mode normal|fast|fast2|fast3
// --mtu M --sndwnd W --rcvwnd W --acknodelay --timeout SECONDS --seed S.
package main

import (
	"bytes"
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/klauspost/reedsolomon"
	kcp "github.com/xtaci/kcp-go"
	"golang.org/x/crypto/pbkdf2"
)

const (
	defaultKey = "it's a secrect"
	salt       = "kcp-go"
	nonceSize  = 16
	crcSize    = 4
	headerSize = nonceSize + crcSize
)

// Ciphers kcp-go 5.6.1 (Debian) offers under kcptun's names. Upstream also has
// "aes-128-gcm" and "null", which this version lacks.
var cipherNames = []string{
	"aes", "aes-128", "aes-192", "salsa20", "blowfish", "twofish", "cast5",
	"3des", "tea", "xtea", "sm4", "xor", "none",
}

func deriveKey(key string) []byte {
	return pbkdf2.Key([]byte(key), []byte(salt), 4096, 32, sha1.New)
}

func newBlock(name string, pass []byte) (kcp.BlockCrypt, error) {
	switch name {
	case "aes":
		return kcp.NewAESBlockCrypt(pass)
	case "aes-128":
		return kcp.NewAESBlockCrypt(pass[:16])
	case "aes-192":
		return kcp.NewAESBlockCrypt(pass[:24])
	case "salsa20":
		return kcp.NewSalsa20BlockCrypt(pass)
	case "blowfish":
		return kcp.NewBlowfishBlockCrypt(pass)
	case "twofish":
		return kcp.NewTwofishBlockCrypt(pass)
	case "cast5":
		return kcp.NewCast5BlockCrypt(pass[:16])
	case "3des":
		return kcp.NewTripleDESBlockCrypt(pass[:24])
	case "tea":
		return kcp.NewTEABlockCrypt(pass[:16])
	case "xtea":
		return kcp.NewXTEABlockCrypt(pass[:16])
	case "sm4":
		return kcp.NewSM4BlockCrypt(pass[:16])
	case "xor":
		return kcp.NewSimpleXORBlockCrypt(pass)
	case "none":
		return kcp.NewNoneBlockCrypt(pass)
	}
	return nil, fmt.Errorf("unknown or unsupported cipher %q (kcp-go 5.6.1 has: %s)",
		name, strings.Join(cipherNames, ", "))
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "kcp-go-peer: "+format+"\n", args...)
	os.Exit(1)
}

func emit(v interface{}) {
	b, err := json.Marshal(v)
	if err != nil {
		fail("json: %v", err)
	}
	os.Stdout.Write(append(b, '\n'))
}

// patternBytes returns n deterministic bytes (an LCG; not math/rand, so that the vectors
// never depend on the Go version).
func patternBytes(n int, seed uint32) []byte {
	out := make([]byte, n)
	x := seed*2654435761 + 12345
	for i := range out {
		x = x*1103515245 + 12345
		out[i] = byte(x >> 16)
	}
	return out
}

func hexes(bs [][]byte) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = hex.EncodeToString(b)
	}
	return out
}

type cipherVector struct {
	Kind       string `json:"kind"`
	Cipher     string `json:"cipher"`
	Passphrase string `json:"passphrase"`
	Key        string `json:"key"`
	Nonce      string `json:"nonce"`
	Payload    string `json:"payload"`
	Plain      string `json:"plain"`
	Encrypted  string `json:"encrypted"`
}

type rsVector struct {
	Kind   string   `json:"kind"`
	DS     int      `json:"ds"`
	PS     int      `json:"ps"`
	Data   []string `json:"data"`
	Parity []string `json:"parity"`
}

type fecVector struct {
	Kind string `json:"kind"`
	DS   int    `json:"ds"`
	PS   int    `json:"ps"`
	// FirstSeqid is the seqid of the group's first data packet.
	FirstSeqid uint32 `json:"first_seqid"`
	// Payloads are the KCP bytes of the ds data packets.
	Payloads []string `json:"payloads"`
	// Packets are the ds data packets then the ps parity packets, FEC header included,
	// exactly as kcp-go's fecEncoder emits them (before the crypto header).
	Packets []string `json:"packets"`
}

func golden() {
	pass := deriveKey(defaultKey)
	nonce := make([]byte, nonceSize)
	for i := range nonce {
		nonce[i] = byte(0xA0 + i)
	}
	for _, name := range cipherNames {
		block, err := newBlock(name, pass)
		if err != nil {
			fail("%s: %v", name, err)
		}
		for _, n := range []int{0, 1, 7, 16, 33, 100, 1330} {
			payload := patternBytes(n, uint32(n)+7)
			plain := make([]byte, headerSize+n)
			copy(plain, nonce)
			copy(plain[headerSize:], payload)
			binary.LittleEndian.PutUint32(plain[nonceSize:], crc32.ChecksumIEEE(plain[headerSize:]))
			enc := make([]byte, len(plain))
			block.Encrypt(enc, plain)
			dec := make([]byte, len(enc))
			block.Decrypt(dec, enc)
			if !bytes.Equal(dec, plain) {
				fail("%s: decrypt(encrypt(x)) != x", name)
			}
			emit(cipherVector{"cipher", name, defaultKey, hex.EncodeToString(pass),
				hex.EncodeToString(nonce), hex.EncodeToString(payload),
				hex.EncodeToString(plain), hex.EncodeToString(enc)})
		}
	}

	params := [][2]int{{10, 3}, {5, 2}, {1, 1}, {3, 1}, {20, 10}, {1, 3}}
	for _, p := range params {
		ds, ps := p[0], p[1]
		codec, err := reedsolomon.New(ds, ps)
		if err != nil {
			fail("reedsolomon.New(%d,%d): %v", ds, ps, err)
		}
		// Raw RS: equal-length data shards.
		for set, size := range []int{1, 16, 64, 1300} {
			shards := make([][]byte, ds+ps)
			for i := 0; i < ds; i++ {
				shards[i] = patternBytes(size, uint32(1000*set+i))
			}
			for i := ds; i < ds+ps; i++ {
				shards[i] = make([]byte, size)
			}
			if err := codec.Encode(shards); err != nil {
				fail("encode: %v", err)
			}
			emit(rsVector{"rs", ds, ps, hexes(shards[:ds]), hexes(shards[ds:])})
		}
		// FEC groups: packets of different lengths, laid out as kcp-go's fecEncoder does.
		for set, first := range []uint32{0, uint32(ds + ps), 0xffffffff/uint32(ds+ps)*uint32(ds+ps) - uint32(ds+ps)} {
			payloads := make([][]byte, ds)
			for i := range payloads {
				payloads[i] = patternBytes(24+(i*97+set*31)%1200, uint32(7000+100*set+i))
			}
			emit(fecGroup(codec, ds, ps, first, payloads))
		}
	}
}

// fecGroup lays one group out exactly as fec.go's fecEncoder.encode does.
func fecGroup(codec reedsolomon.Encoder, ds, ps int, first uint32, payloads [][]byte) fecVector {
	maxSize := 0
	packets := make([][]byte, ds+ps)
	for i, p := range payloads {
		pkt := make([]byte, 8+len(p))
		binary.LittleEndian.PutUint32(pkt, first+uint32(i))
		binary.LittleEndian.PutUint16(pkt[4:], 0xf1)
		binary.LittleEndian.PutUint16(pkt[6:], uint16(2+len(p)))
		copy(pkt[8:], p)
		packets[i] = pkt
		if len(pkt) > maxSize {
			maxSize = len(pkt)
		}
	}
	shards := make([][]byte, ds+ps)
	for i := 0; i < ds; i++ {
		s := make([]byte, maxSize-6)
		copy(s, packets[i][6:])
		shards[i] = s
	}
	for i := ds; i < ds+ps; i++ {
		shards[i] = make([]byte, maxSize-6)
	}
	if err := codec.Encode(shards); err != nil {
		fail("encode: %v", err)
	}
	for i := ds; i < ds+ps; i++ {
		pkt := make([]byte, maxSize)
		binary.LittleEndian.PutUint32(pkt, first+uint32(i))
		binary.LittleEndian.PutUint16(pkt[4:], 0xf2)
		copy(pkt[6:], shards[i])
		packets[i] = pkt
	}
	return fecVector{"fec", ds, ps, first, hexes(payloads), hexes(packets)}
}

type options struct {
	sockbuf    int
	listen     string
	crypt      string
	key        string
	ds, ps     int
	mode       string
	mtu        int
	sndwnd     int
	rcvwnd     int
	message    bool
	acknodelay bool
	nbytes     int64
	timeout    int
	seed       int64
	count      int
}

func parseOptions(name string, args []string) (*options, []string) {
	o := &options{}
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	fs.StringVar(&o.listen, "listen", "127.0.0.1:0", "listen address (echo-server)")
	fs.StringVar(&o.crypt, "crypt", "aes", "cipher: "+strings.Join(cipherNames, ", "))
	fs.StringVar(&o.key, "key", defaultKey, "pre-shared passphrase (PBKDF2 as kcptun)")
	fs.IntVar(&o.ds, "ds", 10, "FEC data shards (0 = no FEC)")
	fs.IntVar(&o.ps, "ps", 3, "FEC parity shards (0 = no FEC)")
	fs.StringVar(&o.mode, "mode", "fast", "kcptun preset: normal, fast, fast2, fast3")
	fs.IntVar(&o.mtu, "mtu", 1350, "MTU")
	fs.IntVar(&o.sndwnd, "sndwnd", 1024, "send window")
	fs.IntVar(&o.rcvwnd, "rcvwnd", 1024, "receive window")
	fs.IntVar(&o.sockbuf, "sockbuf", 4194304, "UDP socket buffer bytes, as kcptun's -sockbuf (0 = system default)")
	fs.BoolVar(&o.message, "message", false, "message mode (default stream mode)")
	fs.BoolVar(&o.acknodelay, "acknodelay", false, "flush ACKs at once")
	fs.Int64Var(&o.nbytes, "bytes", 1<<20, "bytes to send (client)")
	fs.IntVar(&o.timeout, "timeout", 60, "give up after this many seconds (client)")
	fs.Int64Var(&o.seed, "seed", 1, "seed of the pseudo-random payload (client)")
	fs.IntVar(&o.count, "count", 1000, "round trips (rtt)")
	// Positional arguments may come before or among the flags.
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			fail("%v", err)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	return o, pos
}

func (o *options) block() kcp.BlockCrypt {
	b, err := newBlock(o.crypt, deriveKey(o.key))
	if err != nil {
		fail("%v", err)
	}
	return b
}

func (o *options) configure(c *kcp.UDPSession) {
	var nd, iv, rs, nc int
	switch o.mode {
	case "normal":
		nd, iv, rs, nc = 0, 40, 2, 1
	case "fast":
		nd, iv, rs, nc = 0, 30, 2, 1
	case "fast2":
		nd, iv, rs, nc = 1, 20, 2, 1
	case "fast3":
		nd, iv, rs, nc = 1, 10, 2, 1
	default:
		fail("unknown mode %q", o.mode)
	}
	c.SetStreamMode(!o.message)
	c.SetWriteDelay(false)
	c.SetNoDelay(nd, iv, rs, nc)
	c.SetWindowSize(o.sndwnd, o.rcvwnd)
	if !c.SetMtu(o.mtu) {
		fail("bad mtu %d", o.mtu)
	}
	c.SetACKNoDelay(o.acknodelay)
}

func echoServer(args []string) {
	o, _ := parseOptions("echo-server", args)
	l, err := kcp.ListenWithOptions(o.listen, o.block(), o.ds, o.ps)
	if err != nil {
		fail("listen: %v", err)
	}
	if o.sockbuf > 0 {
		l.SetReadBuffer(o.sockbuf)
		l.SetWriteBuffer(o.sockbuf)
	}
	fmt.Printf("listening on %s\n", l.Addr())
	os.Stdout.Sync()
	for {
		conn, err := l.AcceptKCP()
		if err != nil {
			fail("accept: %v", err)
		}
		o.configure(conn)
		go func(c *kcp.UDPSession) {
			defer c.Close()
			// A KCP peer never says goodbye: idle sessions end after 5 minutes.
			buf := make([]byte, 1<<20)
			for {
				c.SetReadDeadline(time.Now().Add(5 * time.Minute))
				n, err := c.Read(buf)
				if err != nil {
					return
				}
				if _, err := c.Write(buf[:n]); err != nil {
					return
				}
			}
		}(conn)
	}
}

// dial opens a session to addr with every option applied (socket buffers included).
func (o *options) dial(addr string) *kcp.UDPSession {
	conn, err := kcp.DialWithOptions(addr, o.block(), o.ds, o.ps)
	if err != nil {
		fail("dial: %v", err)
	}
	if o.sockbuf > 0 {
		conn.SetReadBuffer(o.sockbuf)
		conn.SetWriteBuffer(o.sockbuf)
	}
	o.configure(conn)
	return conn
}

func client(args []string) {
	o, pos := parseOptions("client", args)
	if len(pos) != 1 {
		fail("usage: client ADDR [options] --bytes N")
	}
	conn := o.dial(pos[0])
	deadline := time.Now().Add(time.Duration(o.timeout) * time.Second)
	conn.SetDeadline(deadline)

	rng := rand.New(rand.NewSource(o.seed))
	data := make([]byte, o.nbytes)
	rng.Read(data)
	// Message mode: messages of 1..mss bytes. kcp-go 5.6.1's UDPSession.Write cuts a
	// buffer into mss-sized kcp.Send calls, so a larger write is several messages.
	mss := o.mtu - 24 - headerSize
	if o.ds > 0 && o.ps > 0 {
		mss -= 8
	}
	var sizes []int
	if o.message {
		for left := len(data); left > 0; {
			n := 1 + rng.Intn(mss)
			if n > left {
				n = left
			}
			sizes = append(sizes, n)
			left -= n
		}
	}

	cpu0 := cpuSeconds()
	start := time.Now()
	werr := make(chan error, 1)
	go func() {
		if o.message {
			off := 0
			for _, n := range sizes {
				if _, err := conn.Write(data[off : off+n]); err != nil {
					werr <- err
					return
				}
				off += n
			}
			werr <- nil
			return
		}
		for off := 0; off < len(data); off += 65536 {
			end := off + 65536
			if end > len(data) {
				end = len(data)
			}
			if _, err := conn.Write(data[off:end]); err != nil {
				werr <- err
				return
			}
		}
		werr <- nil
	}()

	got := make([]byte, 0, len(data))
	buf := make([]byte, 1<<20)
	mismatch := ""
	if o.message {
		for i, n := range sizes {
			m, err := conn.Read(buf)
			if err != nil {
				fail("read message %d: %v (after %d of %d bytes)", i, err, len(got), len(data))
			}
			if m != n {
				mismatch = fmt.Sprintf("message %d: %d bytes, expected %d", i, m, n)
				break
			}
			got = append(got, buf[:m]...)
		}
	} else {
		for len(got) < len(data) {
			m, err := conn.Read(buf)
			if err != nil {
				fail("read: %v (after %d of %d bytes)", err, len(got), len(data))
			}
			got = append(got, buf[:m]...)
		}
	}
	elapsed := time.Since(start).Seconds()
	if err := <-werr; err != nil {
		fail("write: %v", err)
	}
	if mismatch == "" && !bytes.Equal(got, data) {
		for i := range data {
			if i >= len(got) || got[i] != data[i] {
				mismatch = fmt.Sprintf("first differing byte at offset %d", i)
				break
			}
		}
	}
	snmp := kcp.DefaultSnmp.Copy()
	counters := map[string]uint64{}
	for i, h := range snmp.Header() {
		v, _ := strconv.ParseUint(snmp.ToSlice()[i], 10, 64)
		counters[h] = v
	}
	out := map[string]interface{}{
		"ok":       mismatch == "",
		"bytes":    len(data),
		"seconds":  elapsed,
		"mb_per_s": float64(len(data)) / elapsed / 1e6,
		"crypt":    o.crypt,
		"ds":       o.ds,
		"ps":       o.ps,
		"mode":     o.mode,
		"message":  o.message,
		"snmp":     counters,
		"cpu_s":    cpuSeconds() - cpu0,
	}
	if mismatch != "" {
		out["mismatch"] = mismatch
	}
	emit(out)
	conn.Close()
	if mismatch != "" {
		os.Exit(1)
	}
}

// cpuSeconds is the user+system CPU time this process has used so far.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return -1
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

// rtt does serial 64-byte echo round trips and prints their p50 and p99 in microseconds.
func rtt(args []string) {
	o, pos := parseOptions("rtt", args)
	if len(pos) != 1 {
		fail("usage: rtt ADDR [options] --count N")
	}
	conn := o.dial(pos[0])
	conn.SetDeadline(time.Now().Add(time.Duration(o.timeout) * time.Second))
	msg := patternBytes(64, 99)
	buf := make([]byte, 64)
	const warmup = 10
	times := make([]float64, 0, o.count)
	for i := 0; i < warmup+o.count; i++ {
		t := time.Now()
		if _, err := conn.Write(msg); err != nil {
			fail("write: %v", err)
		}
		if _, err := io.ReadFull(conn, buf); err != nil {
			fail("read: %v (round trip %d)", err, i)
		}
		if !bytes.Equal(buf, msg) {
			fail("echo mismatch at round trip %d", i)
		}
		if i >= warmup {
			times = append(times, float64(time.Since(t).Nanoseconds())/1e3)
		}
	}
	sort.Float64s(times)
	pct := func(p float64) float64 {
		if len(times) == 0 {
			return 0
		}
		i := int(p * float64(len(times)))
		if i >= len(times) {
			i = len(times) - 1
		}
		return times[i]
	}
	emit(map[string]interface{}{
		"count":  len(times),
		"p50_us": pct(0.50),
		"p99_us": pct(0.99),
		"cpu_s":  cpuSeconds(),
	})
	conn.Close()
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: kcp-go-peer golden | echo-server --listen ADDR [options] | client ADDR --bytes N [options]")
	os.Exit(2)
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "golden":
		golden()
	case "echo-server":
		echoServer(os.Args[2:])
	case "client":
		client(os.Args[2:])
	case "rtt":
		rtt(os.Args[2:])
	default:
		usage()
	}
}
