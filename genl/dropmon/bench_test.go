package dropmon

import (
	"path/filepath"
	"testing"
)

// BenchmarkParsePacketAlert measures the decode cost of one packet alert
// (the UDP fixture: 46-byte payload, all software attributes), reusing the
// Alert as Events.Read does. ns/op is ns per alert.
func BenchmarkParsePacketAlert(b *testing.B) {
	for _, name := range []string{"packet_sw_udp4.hex", "packet_hw.hex"} {
		b.Run(name, func(b *testing.B) {
			msg := readHex(b, filepath.Join(fixtureDir, "uapi", name))
			var a Alert
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ParseMessage(msg, &a); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkParsePacketAlertRecorded decodes a packet alert recorded from a
// real kernel (128-byte truncation), when one is there.
func BenchmarkParsePacketAlertRecorded(b *testing.B) {
	files, _ := filepath.Glob(filepath.Join(fixtureDir, "*", "packet_udp4_noport_0.hex"))
	if len(files) == 0 {
		b.Skip("no recorded fixture yet")
	}
	msg := readHex(b, files[len(files)-1])
	var a Alert
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseMessage(msg, &a); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseSummaryAlert(b *testing.B) {
	msg := readHex(b, filepath.Join(fixtureDir, "uapi", "summary.hex"))
	var a Alert
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseMessage(msg, &a); err != nil {
			b.Fatal(err)
		}
	}
}
