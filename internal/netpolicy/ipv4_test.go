package netpolicy

import (
	"testing"
)

func TestParseIPv4Loose(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" means an error is expected
	}{
		{"127.0.0.1", "127.0.0.1"},
		{"127.0.0.1.", "127.0.0.1"},
		{"2130706433", "127.0.0.1"},
		{"0x7f000001", "127.0.0.1"},
		{"0X7F000001", "127.0.0.1"},
		{"017700000001", "127.0.0.1"},
		{"0177.0.0.1", "127.0.0.1"},
		{"0x7f.0.0.1", "127.0.0.1"},
		{"0x7f.0x0.0x0.0x1", "127.0.0.1"},
		{"127.1", "127.0.0.1"},
		{"127.0.1", "127.0.0.1"},
		{"0x7f.1", "127.0.0.1"},
		{"127.000.000.001", "127.0.0.1"},
		{"0000000000000000000000000127.1", "87.0.0.1"}, // leading zeros: octal 127 = 87
		{"010.0.0.1", "8.0.0.1"},
		{"0", "0.0.0.0"},
		{"0x", "0.0.0.0"},
		{"0x.0x.0x.0x", "0.0.0.0"},
		{"00", "0.0.0.0"},
		{"4294967295", "255.255.255.255"},
		{"0xffffffff", "255.255.255.255"},
		{"037777777777", "255.255.255.255"},
		{"1.16777215", "1.255.255.255"},
		{"1.2.65535", "1.2.255.255"},
		{"169.254.43518", "169.254.169.254"},
		{"0xa9fea9fe", "169.254.169.254"},
		{"3232235777", "192.168.1.1"},
		{"8.8.8.8", "8.8.8.8"},
		{"", ""},
		{".", ""},
		{"..", ""},
		{"1..1", ""},
		{".1.2.3", ""},
		{"1.2.3.4..", ""},
		{"1.2.3.4.5", ""},
		{"256.0.0.1", ""},
		{"1.256.0.1", ""},
		{"1.2.3.256", ""},
		{"1.2.65536", ""},
		{"1.16777216", ""},
		{"4294967296", ""},
		{"0x100000000", ""},
		{"99999999999999999999999", ""},
		{"08", ""},
		{"09.0.0.1", ""},
		{"0x1g", ""},
		{"0xx1", ""},
		{"+1", ""},
		{"-1", ""},
		{" 1", ""},
		{"1 ", ""},
		{"1.2.3.4 ", ""},
		{"a.b.c.d", ""},
		{"1e3", ""},
		{"0o17", ""},
		{"0b1", ""},
		{"1_000", ""},
		{"１２７.0.0.1", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseIPv4Loose(tt.in)
			switch {
			case tt.want == "" && err == nil:
				t.Errorf("ParseIPv4Loose(%q) = %v, want error", tt.in, got)
			case tt.want != "" && err != nil:
				t.Errorf("ParseIPv4Loose(%q) error %v, want %s", tt.in, err, tt.want)
			case tt.want != "" && got.String() != tt.want:
				t.Errorf("ParseIPv4Loose(%q) = %v, want %s", tt.in, got, tt.want)
			}
		})
	}
}

func TestEndsInNumber(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"127.0.0.1", true},
		{"example.123", true},
		{"0x7f", true},
		{"a.0x", true},
		{"1.2.3.4.5", true},
		{"example.com", false},
		{"0x7f.example.com", false},
		{"example.0xg", false},
		{"123abc", false},
		{"deadbeef", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := endsInNumber(tt.in); got != tt.want {
			t.Errorf("endsInNumber(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func BenchmarkParseIPv4Loose(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseIPv4Loose("0x7f.0.0.1"); err != nil {
			b.Fatal(err)
		}
	}
}
