package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

const (
	waveFormatPCM        = 0x0001
	waveFormatExtensible = 0xFFFE
)

// wavReader reads the 16-bit PCM frames of a RIFF/WAVE stream, in order, without loading the
// whole file.
type wavReader struct {
	SampleRate uint32
	Channels   uint16
	// BlockAlign is the size of one frame in bytes (channels * 2).
	BlockAlign uint16

	r         io.Reader
	remaining int64 // bytes of the data chunk not read yet; -1 means "until EOF"
	trailing  int   // bytes of an incomplete last frame, dropped
}

// newWAVReader parses the RIFF/WAVE header up to the start of the data chunk. It accepts
// WAVE_FORMAT_PCM and WAVE_FORMAT_EXTENSIBLE (with the PCM sub-format), 16 bits per sample,
// any number of interleaved channels.
func newWAVReader(r io.Reader) (*wavReader, error) {
	br := bufio.NewReaderSize(r, 64*1024)
	var riff [12]byte
	if _, err := io.ReadFull(br, riff[:]); err != nil {
		return nil, fmt.Errorf("reading RIFF header: %w", err)
	}
	if string(riff[0:4]) != "RIFF" || string(riff[8:12]) != "WAVE" {
		return nil, errors.New("not a RIFF/WAVE file")
	}
	w := &wavReader{r: br}
	haveFmt := false
	for {
		var hdr [8]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return nil, fmt.Errorf("no data chunk found: %w", err)
		}
		id := string(hdr[0:4])
		size := int64(binary.LittleEndian.Uint32(hdr[4:8]))
		switch id {
		case "fmt ":
			if size < 16 {
				return nil, fmt.Errorf("fmt chunk too short (%d bytes)", size)
			}
			body := make([]byte, size)
			if _, err := io.ReadFull(br, body); err != nil {
				return nil, fmt.Errorf("reading fmt chunk: %w", err)
			}
			if err := w.parseFmt(body); err != nil {
				return nil, err
			}
			haveFmt = true
			if size%2 == 1 { // chunks are padded to an even size
				if _, err := br.Discard(1); err != nil {
					return nil, fmt.Errorf("reading fmt chunk: %w", err)
				}
			}
		case "data":
			if !haveFmt {
				return nil, errors.New("data chunk before fmt chunk")
			}
			w.remaining = size
			if size == math.MaxUint32 { // streamed WAV of unknown length
				w.remaining = -1
			}
			return w, nil
		default: // LIST, fact, cue, ...: skip
			if _, err := br.Discard(int(size + size%2)); err != nil {
				return nil, fmt.Errorf("skipping %q chunk: %w", id, err)
			}
		}
	}
}

func (w *wavReader) parseFmt(b []byte) error {
	format := binary.LittleEndian.Uint16(b[0:2])
	w.Channels = binary.LittleEndian.Uint16(b[2:4])
	w.SampleRate = binary.LittleEndian.Uint32(b[4:8])
	w.BlockAlign = binary.LittleEndian.Uint16(b[12:14])
	bits := binary.LittleEndian.Uint16(b[14:16])
	if format == waveFormatExtensible {
		// cbSize(2) validBits(2) channelMask(4) subFormat GUID(16): the GUID starts with the
		// format code.
		if len(b) < 40 {
			return errors.New("WAVE_FORMAT_EXTENSIBLE fmt chunk too short")
		}
		format = binary.LittleEndian.Uint16(b[24:26])
	}
	switch {
	case format != waveFormatPCM:
		return fmt.Errorf("unsupported WAV encoding 0x%04x: only integer PCM is supported", format)
	case bits != 16:
		return fmt.Errorf("unsupported %d-bit samples: only 16-bit PCM is supported", bits)
	case w.Channels == 0:
		return errors.New("WAV header says 0 channels")
	case w.SampleRate == 0:
		return errors.New("WAV header says 0 Hz")
	case w.BlockAlign != w.Channels*2:
		return fmt.Errorf("block align %d does not match %d channels of 16 bits",
			w.BlockAlign, w.Channels)
	}
	return nil
}

// ReadFrames reads up to maxFrames whole frames into buf (which must hold
// maxFrames*BlockAlign bytes) and returns the number of frames read; 0 frames with io.EOF at
// the end of the data.
func (w *wavReader) ReadFrames(buf []byte, maxFrames int) (int, error) {
	want := int64(maxFrames) * int64(w.BlockAlign)
	if w.remaining >= 0 && w.remaining < want {
		want = w.remaining
	}
	if want == 0 {
		return 0, io.EOF
	}
	n, err := io.ReadFull(w.r, buf[:want])
	if w.remaining >= 0 {
		w.remaining -= int64(n)
	}
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		// A truncated file (or a streamed one): stop after the whole frames read so far.
		w.remaining = 0
	case err != nil:
		return 0, err
	}
	frames := n / int(w.BlockAlign)
	if rest := n % int(w.BlockAlign); rest != 0 {
		w.trailing += rest
		w.remaining = 0
	}
	if frames == 0 {
		return 0, io.EOF
	}
	return frames, nil
}

// TrailingBytes is the number of bytes of an incomplete last frame that were dropped.
func (w *wavReader) TrailingBytes() int { return w.trailing }
