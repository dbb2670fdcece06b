"""The TwiML each call plays, built with the official `twilio.twiml.voice_response`."""

from twilio.twiml.voice_response import VoiceResponse

DIAL_TIMEOUT_SECONDS = 20  # how long a forwarded phone rings before the caller reaches voicemail
VOICEMAIL_MAX_SECONDS = 120


def message(*, say: str | None, play_url: str | None, machine_detection: bool) -> str:
    """A recording or text. With machine detection Twilio starts it after the greeting's beep (DetectMessageEnd),
    so the same TwiML serves a person and an answering machine."""
    response = VoiceResponse()
    if machine_detection:
        response.pause(length=1)
    if play_url:
        response.play(play_url)
    else:
        response.say(say)
    return str(response)


def bridge(connect_to: str, *, caller_id: str, time_limit: int) -> str:
    """Click-to-call: the user's phone answers, then the contact is dialed; the contact's leg cannot outlive the
    hold either."""
    response = VoiceResponse()
    response.dial(connect_to, caller_id=caller_id, time_limit=time_limit)
    return str(response)


def forward(phone: str, *, time_limit: int, action: str) -> str:
    """An inbound call rings the number's forwarding phone for at most `time_limit` seconds of talk; the action
    hears how it went (voicemail when nobody answered)."""
    response = VoiceResponse()
    response.dial(phone, timeout=DIAL_TIMEOUT_SECONDS, time_limit=time_limit, action=action)
    return str(response)


def voicemail(*, transcribe: bool, recording_callback: str, transcription_callback: str) -> str:
    response = VoiceResponse()
    response.say("Please leave a message after the tone.")
    response.record(max_length=VOICEMAIL_MAX_SECONDS, play_beep=True, recording_status_callback=recording_callback,
                    transcribe=transcribe, transcribe_callback=transcription_callback if transcribe else None)
    return str(response)


def hang_up() -> str:
    response = VoiceResponse()
    response.hangup()
    return str(response)
