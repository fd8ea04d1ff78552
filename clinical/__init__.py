"""The shared clinical kernel: one definition of each clinical fact, pure (no I/O, no clock).

The rule engine, `evaluate`, the stream worker and the DSMB report all read these, so that an
alert and the report can never disagree on an eGFR, an age, a baseline or what "related" means.

    compare   threshold comparison with a 1e-9 relative tolerance
    bounds    censored values (`<15`, `>3000`) as intervals, read in the safe direction
    egfr      CKD-EPI 2021 (race-free), also over a censored creatinine
    age       whole years at a clinical date
    baseline  the baseline-visit result, else the last result before the first dose
    kdigo     G and A categories, AKI staging
    terms     related, serious, fatal, unexpected, and what counts until assessed
    course    when the schedule ends (a disposition, a death), which visits are still owed
"""
