"""Reading WAV files: hostile but valid inputs become mono int16 at 44.1 kHz (logged); broken ones are refused
with one line naming the file and the problem."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import ACCEPTED, accepted_wavs, refused_wavs, write_wav

from fsdlib.audio import SAMPLE_RATE, load_wav
from fsdlib.errors import FsdError


def test_accepted_inputs_become_mono_int16_44k(tmp_path: Path) -> None:
    for name, path in accepted_wavs(tmp_path).items():
        wave = load_wav(path)
        seconds = ACCEPTED[name][0] if name in ACCEPTED else 0.5  # silent.wav: 0.5 s
        assert wave.dtype == np.int16 and wave.ndim == 1, name
        assert abs(len(wave) - round(seconds * SAMPLE_RATE)) <= 2, name


def test_conversions_are_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    paths = accepted_wavs(tmp_path)
    load_wav(paths["six_channels.wav"])
    load_wav(paths["rate_96k.wav"])
    load_wav(paths["pcm_24.wav"])
    assert "downmixed 6 channels" in caplog.text
    assert "resampled 96000 Hz" in caplog.text
    assert "converted PCM_24 to 16-bit PCM" in caplog.text


def test_refused_inputs_name_file_and_problem(tmp_path: Path) -> None:
    for name, (path, words) in refused_wavs(tmp_path).items():
        with pytest.raises(FsdError) as info:
            load_wav(path)
        message = str(info.value)
        assert str(path) in message and words in message, (name, message)
        assert "\n" not in message


def test_audio_reader(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    plain = load_wav(write_wav(tmp_path / "a.wav", seconds=0.1))
    assert plain.dtype == np.int16 and plain.shape == (4410,)
    stereo = load_wav(write_wav(tmp_path / "b.wav", seconds=0.1, sr=48000, channels=2))
    assert stereo.dtype == np.int16 and abs(len(stereo) - 4410) <= 1
    assert "downmixed 2 channels" in caplog.text and "48000 Hz" in caplog.text
    trunc = tmp_path / "t.wav"
    trunc.write_bytes((tmp_path / "a.wav").read_bytes()[:-1000])
    with pytest.raises(FsdError, match="truncated"):
        load_wav(trunc)
    sf.write(str(tmp_path / "e.wav"), np.zeros(0, np.int16), 44100, subtype="PCM_16")
    with pytest.raises(FsdError, match="empty WAV"):
        load_wav(tmp_path / "e.wav")
    (tmp_path / "z.wav").write_bytes(b"")
    with pytest.raises(FsdError, match="empty file"):
        load_wav(tmp_path / "z.wav")
    (tmp_path / "x.wav").write_text("this is not audio")
    with pytest.raises(FsdError, match="not a WAV"):
        load_wav(tmp_path / "x.wav")


SINE_FORMATS = {  # name: (sample rate, channels, subtype)
    "pcm_u8": (44100, 1, "PCM_U8"),
    "pcm_24": (44100, 1, "PCM_24"),
    "float32": (44100, 1, "FLOAT"),
    "stereo": (44100, 2, "PCM_16"),
    "six_channels": (44100, 6, "PCM_16"),
    "rate_8k": (8000, 1, "PCM_16"),
    "rate_22k": (22050, 1, "PCM_16"),
    "rate_96k": (96000, 1, "PCM_16"),
    "stereo_48k_24bit": (48000, 2, "PCM_24"),
}


@pytest.mark.parametrize("name", list(SINE_FORMATS))
def test_a_sine_keeps_its_frequency_and_level_through_every_format(tmp_path: Path, name: str) -> None:
    """1 s of a 1,234.5 Hz sine at amplitude 0.4; the channels carry it at gains averaging 1 (downmix: their mean)."""
    sr, channels, subtype = SINE_FORMATS[name]
    freq, amplitude = 1234.5, 0.4
    tone = amplitude * np.sin(2 * np.pi * freq * np.arange(sr) / sr)
    gains = np.linspace(0.5, 1.5, channels)[None, :] if channels > 1 else np.ones((1, 1))
    sf.write(str(tmp_path / f"{name}.wav"), tone[:, None] * gains, sr, subtype=subtype)
    wave = load_wav(tmp_path / f"{name}.wav").astype(np.float64) / 32768.0
    assert abs(len(wave) - SAMPLE_RATE) <= 2
    core = wave[2000:-2000]  # away from the resampler's edges
    spectrum = np.abs(np.fft.rfft(core * np.hanning(len(core)), n=8 * len(core)))
    assert np.argmax(spectrum) * SAMPLE_RATE / (8 * len(core)) == pytest.approx(freq, abs=1.0)
    assert np.sqrt(np.mean(core**2)) == pytest.approx(amplitude / np.sqrt(2), rel=0.01)


def test_downmix_is_the_channel_mean(tmp_path: Path) -> None:
    channels = np.random.default_rng(0).integers(-20000, 20000, size=(4410, 3), dtype=np.int16)
    sf.write(str(tmp_path / "three.wav"), channels, SAMPLE_RATE, subtype="PCM_16")
    wave = load_wav(tmp_path / "three.wav")
    assert np.abs(wave - channels.astype(np.float64).mean(axis=1)).max() <= 1
