"""Voice: calls placed, bridged and broadcast, inbound calls forwarded to voicemail, all metered per minute.

    pricing     what a call costs and what a hold of it covers: started minutes x rate x legs (+ flat charges)
    twiml       the TwiML each call plays, built with the official `twilio.twiml.voice_response`
    calls       accepting POST /v1/calls, reading and listing calls
    placing     the place step: hold, mark the call `queued`, Twilio's create once, store the sid
    progress    Twilio's call-status reports, verified, applied in any order, and settlement on the final one
    inbound     calls to the account's numbers: forwarding, voicemail and transcription, always answered
    broadcasts  one recording or text to many numbers with machine detection, pause/resume/cancel, counts
    sweeper     reconciling calls whose reports never came, by fetching them from Twilio

A call's hold covers `minutes_held` whole minutes and Twilio is told `time_limit` = those minutes in seconds, so a
call never talks (nor bills) a minute it did not hold. Every step is keyed by the call id: a job delivered twice,
or a report repeated or reordered, changes nothing the second time. Inbound calls have no hold: they always ring
through and their cost is charged as it becomes known, even past zero (a bounded debt that locks a prepaid account).

May import messaging (rates, numbers, opt-outs, quiet hours), twilio, ledger and the root; nothing imports it but the
adapters.
"""
