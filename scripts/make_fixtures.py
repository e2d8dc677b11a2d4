"""Synthesise the speech fixtures used by the tests and the demo.

Speech comes from espeak-ng (Debian package ``espeak-ng``), pauses of varied
length are inserted between utterances and seeded noise is mixed in, so the
files hold real speech with realistic onsets and offsets rather than random
noise. The outputs are committed; run this only to regenerate them:

    apt-get install espeak-ng
    .venv/bin/python scripts/make_fixtures.py

The files are deterministic for a given espeak-ng build; the golden results in
``tests/golden`` must be regenerated (``make goldens``) whenever they change.
"""

from __future__ import annotations

import io
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Utterance:
    text: str
    voice: str
    speed: int = 165
    pitch: int = 50


@dataclass(frozen=True)
class Fixture:
    path: Path
    sample_rate: int
    utterances: tuple[Utterance, ...]
    pauses_s: tuple[float, ...]
    lead_s: float
    tail_s: float
    snr_db: float
    seed: int


def speak(utterance: Utterance) -> tuple[np.ndarray, int]:
    """Return espeak-ng's rendering of one utterance as float32 mono."""
    wav = subprocess.run(
        [
            "espeak-ng",
            "-v",
            utterance.voice,
            "-s",
            str(utterance.speed),
            "-p",
            str(utterance.pitch),
            "--stdout",
            utterance.text,
        ],
        check=True,
        capture_output=True,
    ).stdout
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    return audio, rate


def pink_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Approximately 1/f noise by spectral shaping of white noise."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.arange(spectrum.size, dtype=np.float64)
    freqs[0] = 1.0
    shaped = np.fft.irfft(spectrum / np.sqrt(freqs), n)
    return (shaped / np.std(shaped)).astype(np.float32)


def build(fixture: Fixture) -> np.ndarray:
    rng = np.random.default_rng(fixture.seed)
    pieces = [np.zeros(int(fixture.lead_s * fixture.sample_rate), np.float32)]
    for i, utterance in enumerate(fixture.utterances):
        audio, rate = speak(utterance)
        if rate != fixture.sample_rate:
            audio = soxr.resample(audio, rate, fixture.sample_rate, quality="HQ")
        pieces.append(audio.astype(np.float32))
        pause = fixture.pauses_s[i] if i < len(fixture.pauses_s) else fixture.tail_s
        pieces.append(np.zeros(int(pause * fixture.sample_rate), np.float32))
    speech = np.concatenate(pieces)
    speech *= 0.5 / max(1e-9, float(np.max(np.abs(speech))))
    speech_power = float(np.mean(speech[np.abs(speech) > 1e-4] ** 2))
    noise = 0.6 * pink_noise(rng, speech.size) + 0.4 * rng.standard_normal(speech.size).astype(
        np.float32
    )
    noise *= np.sqrt(speech_power / 10 ** (fixture.snr_db / 10)) / np.std(noise)
    mixed = np.clip(speech + noise, -1.0, 1.0).astype(np.float32)
    return mixed


FIXTURES = (
    Fixture(
        path=ROOT / "tests/fixtures/speech_16k.wav",
        sample_rate=16000,
        utterances=(
            Utterance("Hello, thank you for calling. How can I help you today?", "en-us"),
            Utterance("I would like to check the status of my order, please.", "en-gb", 150, 40),
            Utterance("Of course.", "en-us", 180, 60),
            Utterance("Could you read me the order number?", "en-us", 175, 55),
            Utterance("Yes. It is four, seven, two, nine, one, three.", "en-gb", 140, 35),
            Utterance("Thank you. One moment while I look that up.", "en-us", 170, 60),
        ),
        pauses_s=(0.9, 0.07, 0.4, 1.6, 0.25),
        lead_s=0.7,
        tail_s=1.1,
        snr_db=20.0,
        seed=16000,
    ),
    Fixture(
        path=ROOT / "tests/fixtures/speech_noisy_16k.wav",
        sample_rate=16000,
        utterances=(
            Utterance(
                "The weather tomorrow will be cloudy with a chance of rain.", "en-gb-scotland"
            ),
            Utterance("Please remember to bring an umbrella.", "en-029", 160, 45),
            Utterance("Traffic on the ring road is heavy.", "en-us", 190, 70),
            Utterance("That is all for now. Goodbye.", "en-gb-x-rp", 150, 30),
        ),
        pauses_s=(0.15, 1.2, 0.5),
        lead_s=1.5,
        tail_s=0.6,
        snr_db=6.0,
        seed=6,
    ),
    Fixture(
        path=ROOT / "tests/fixtures/speech_8k.wav",
        sample_rate=8000,
        utterances=(
            Utterance("This is a telephone recording at eight kilohertz.", "en-us", 165, 50),
            Utterance("Press one for sales, or two for support.", "en-gb", 155, 45),
            Utterance("Your call is important to us.", "en-us", 170, 65),
        ),
        pauses_s=(0.6, 0.2),
        lead_s=0.5,
        tail_s=0.9,
        snr_db=15.0,
        seed=8000,
    ),
    Fixture(
        path=ROOT / "examples/audio/conversation.wav",
        sample_rate=16000,
        utterances=(
            Utterance("Good morning. Is this the support line?", "en-us", 165, 55),
            Utterance("Yes, it is. What seems to be the problem?", "en-gb", 160, 40),
            Utterance("My internet connection keeps dropping every few minutes.", "en-us", 170, 60),
            Utterance("I see. Let me run a quick test on your line.", "en-gb", 155, 38),
        ),
        pauses_s=(0.8, 0.5, 1.3),
        lead_s=0.6,
        tail_s=0.8,
        snr_db=18.0,
        seed=42,
    ),
)


def main() -> None:
    for fixture in FIXTURES:
        audio = build(fixture)
        fixture.path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(fixture.path, audio, fixture.sample_rate, subtype="PCM_16")
        print(f"{fixture.path.relative_to(ROOT)}: {audio.size / fixture.sample_rate:.2f} s")


if __name__ == "__main__":
    main()
