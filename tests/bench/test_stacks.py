"""Reading py-spy's folded stacks and the per-email counters of the profiler."""

from collections import Counter

from tests.bench import stacks
from tests.bench.counters import per_unit

WORKER = "run (threading.py);send_email (coldmail/queue/actors.py);Deliverer.deliver (coldmail/delivery.py)"
FOLDED = f"""\
thread (101): Thread-3 (worker);{WORKER};claim (coldmail/db/emails.py);Database._execute_cursor (peewee.py) 30
thread (102): Thread-4 (worker);{WORKER};SmtpTransport.send (coldmail/mail/transports.py);SMTP.send (smtplib.py) 50
thread (102): Thread-4 (worker);{WORKER} 5
thread (7): MainThread;run_forever (asyncio/base_events.py);EpollSelector.select (selectors.py) 15
not a stack line
"""


def test_parse_reads_thread_frames_and_counts():
    parsed = stacks.parse(FOLDED)
    assert len(parsed) == 4  # the malformed line is skipped
    assert parsed[0].thread == "Thread (worker)"  # thread numbers dropped: one group per pool
    assert parsed[0].frames[-1] == "Database._execute_cursor (peewee.py)"
    assert stacks.total_samples(parsed) == 100
    assert stacks.by_thread(parsed) == [("Thread (worker)", 85), ("MainThread", 15)]


def test_own_time_counts_leaves_and_total_time_counts_every_frame_once():
    parsed = stacks.parse(FOLDED)
    assert stacks.top_own(parsed, 2) == [("SMTP.send (smtplib.py)", 50), ("Database._execute_cursor (peewee.py)", 30)]
    total = dict(stacks.top_total(parsed, 10, keep=stacks.ours))
    assert total["Deliverer.deliver (coldmail/delivery.py)"] == 85
    assert "run_forever (asyncio/base_events.py)" not in total  # only coldmail's own functions


def test_callees_split_a_function_by_what_it_called():
    inside, split = stacks.callees(stacks.parse(FOLDED), "Deliverer.deliver")
    assert inside == 85
    assert split == [("SmtpTransport.send (coldmail/mail/transports.py)", 50),
                     ("claim (coldmail/db/emails.py)", 30), ("<self>", 5)]


def test_per_unit_takes_the_idle_rate_off():
    # Given 10 s of idle with 100 polls, and a 20 s phase of 1000 emails with 3200 commands
    phase = Counter({"EVALSHA": 3200, "db.xact_commit": 6000})
    idle = Counter({"EVALSHA": 100})
    # Then each email cost (3200 - 200) / 1000 commands
    assert per_unit(phase, idle, phase_s=20.0, idle_s=10.0, units=1000) == {"db.xact_commit": 6.0, "EVALSHA": 3.0}
