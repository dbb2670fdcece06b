"""The simulator's knobs, from the environment and from command-line flags."""

import argparse
import dataclasses
from decimal import Decimal

import pytest

from twilio_sim.__main__ import add_arguments, knob_descriptions, parse_args
from twilio_sim.config import ConfigError, SimulatorConfig


def test_environment_variables_override_defaults():
    # given TWILIO_SIM_* variables
    environ = {
        "TWILIO_SIM_RATE_429": "0.25",
        "TWILIO_SIM_OUTCOMES": "delivered=9,undelivered=1",
        "TWILIO_SIM_SENDER_OUTCOMES": '{"+14155550123": "undelivered:30007=1"}',
        "TWILIO_SIM_NUM_SEGMENTS_OVERRIDE": "2",
        "TWILIO_SIM_PRICE_PER_SEGMENT": "0.0083",
        "UNRELATED": "x",
    }

    # when the configuration is read
    config = SimulatorConfig.from_env(environ)

    # then they are parsed to the knobs' types
    assert config.rate_429 == 0.25
    assert config.outcomes == {"delivered": 9.0, "undelivered": 1.0}
    assert config.sender_outcomes == {"+14155550123": {"undelivered:30007": 1.0}}
    assert config.num_segments_override == 2
    assert config.price_per_segment == Decimal("0.0083")
    assert config.latency_ms == 0


def test_flags_override_the_environment(monkeypatch):
    # given an environment setting and a flag for the same knob
    monkeypatch.setenv("TWILIO_SIM_LATENCY_MS", "100")
    monkeypatch.setenv("TWILIO_SIM_RATE_5XX", "0.1")

    # when the command line is parsed
    host, port, config = parse_args(["--port", "9999", "--latency-ms", "5", "--seed", "7"])

    # then the flag wins and the rest of the environment still applies
    assert (host, port) == ("127.0.0.1", 9999)
    assert (config.latency_ms, config.rate_5xx, config.seed) == (5, 0.1, 7)


def test_a_bad_flag_value_stops_the_cli():
    # given an impossible rate / when parsed / then argparse exits with an error
    with pytest.raises(SystemExit):
        parse_args(["--rate-429", "1.5"])


@pytest.mark.parametrize(
    "changes",
    [
        {"rate_5xx": -0.1},
        {"account_sid": "ACnot-hex"},
        {"outcomes": "delivered=0"},
        {"outcomes": "undelivered:30099=1"},
        {"sender_outcomes": "not json"},
        {"num_segments_override": 0},
        {"latency_ms": "soon"},
        {"call_outcomes": "answered=1"},
        {"answered_by": "robot=1"},
        {"call_outcomes": "busy=0"},
        {"call_minute_ms": -1},
    ],
)
def test_invalid_values_are_refused_without_partial_changes(changes):
    # given a configuration
    config = SimulatorConfig()

    # when an invalid value is applied alongside a valid one
    with pytest.raises(ConfigError):
        config.apply({"latency_ms": 50, **changes})

    # then nothing changed
    assert config == SimulatorConfig()


def test_as_dict_round_trips_through_apply():
    # given a customised configuration
    config = SimulatorConfig(rate_429=0.5, price_per_segment=Decimal("0.01"), seed=3,
                             sender_outcomes={"+14155550123": {"failed:30034": 1.0}})

    # when its dict form is applied to a fresh one
    copy = SimulatorConfig()
    copy.apply(config.as_dict())

    # then they are equal
    assert copy == config


def test_every_knob_says_what_it_does_in_help():
    # given the simulator's command line, as `python -m twilio_sim` and `creditq twilio-sim` build it
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    # when its help is written, then each knob's flag carries its own description and its variable
    described = knob_descriptions()
    assert {knob.name for knob in dataclasses.fields(SimulatorConfig)} <= set(described)
    help_text = " ".join(parser.format_help().split())
    for name, description in described.items():
        assert f"--{name.replace('_', '-')} VALUE {description} (default: " in help_text
        assert f"env TWILIO_SIM_{name.upper()})" in help_text


def test_voice_knobs_come_from_the_environment_and_round_trip():
    # given the voice knobs in the environment, the clock compressed to 5 ms a call-minute
    config = SimulatorConfig.from_env({"TWILIO_SIM_CALL_MINUTE_MS": "5", "TWILIO_SIM_CALL_OUTCOMES": "completed=8,busy=2",
                                       "TWILIO_SIM_ANSWERED_BY": "human=1,machine_end_beep=1",
                                       "TWILIO_SIM_PRICE_PER_MINUTE": "0.013"})

    # when read, and copied through their dict form
    copy = SimulatorConfig()
    copy.apply(config.as_dict())

    # then they have the knobs' types and survive the copy
    assert (config.call_minute_ms, config.call_outcomes) == (5, {"completed": 8.0, "busy": 2.0})
    assert config.answered_by == {"human": 1.0, "machine_end_beep": 1.0}
    assert copy == config
