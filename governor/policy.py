"""The governor's policy: the one owner of token state. Pure: time is an argument, no I/O.

Each message is a method call: :meth:`Governor.request` (an actor wants to make a call),
:meth:`Governor.settle` (the call was made; here is Keepa's envelope), :meth:`Governor.sync`
(an envelope with no grant, e.g. the free ``/token`` at start). :meth:`Governor.decide` says what to
grant now and when to call it again. Rules, in the order they apply:

1. Never grant before the first envelope, nor while the modelled balance, less what the calls in
   flight could cost beyond their estimates, is at or below ``floor`` (Keepa refuses calls at a
   balance <= 0). Grants reserve their estimated cost at once, so the balance can fall at most one
   call's cost below the floor, and Keepa never refuses a granted call it priced within the
   documented maximum.
2. A request whose estimate exceeds the bucket is rejected at once, naming cost and bucket size.
3. If the next refill would overflow the cap while anything waits, grant first (rules 4-5 yield).
4. Recharge mode (see :mod:`governor.recharge`) holds back every class not exempted.
5. Backpressure: peek is granted only while fewer than ``peek_buffer`` calls (commit requests
   pending plus peek calls in flight) wait, so no token buys a peek whose commit cannot follow.
6. After a call marked ``continues`` is granted, other classes must leave ``hold_calls`` more such
   calls' worth (at most a tenth of the bucket) until the follow-up comes (or ``hold_grace_ms``
   after the call settles without one), so a feed scan reads page after page instead of one page
   a refill while peeks and commits take everything in between.
7. Among classes still eligible, the highest-priority one (upsert > commit > peek) with positive
   credit wins. Credit accrues on each refill to classes with pending work, by weight, so every
   waiting class earns its share; when no eligible class has credit the highest-priority eligible
   one borrows (free: work-conserving, no debt), so idle share is lent, never wasted.
"""

from __future__ import annotations

from collections import OrderedDict, deque

from governor.config import GovernorConfig
from governor.costs import CostBook
from governor.model import CLASSES, COMMIT, PEEK, UPSERT, Decision, Grant, Rejection, Request
from governor.recharge import Recharge
from keepa_api.tokens import CAP_MINUTES, Envelope


class Governor:
    name = "governor"

    def __init__(self, config: GovernorConfig | None = None):
        self.cfg = cfg = config or GovernorConfig()
        self.synced = False
        self.balance = 0
        self.rate = 0
        self.cap = cfg.max_tokens or 0
        self.next_refill_ms: int | None = None    # on Keepa's clock, as its envelopes say
        # the host clock (every ``now_ms`` here) less Keepa's, measured by the shell from envelopes
        # (governor.clock): refills are reckoned on Keepa's clock, so a host clock ahead of Keepa's
        # never grants on a refill Keepa has not made yet
        self.clock_offset_ms = 0
        self.last_sync_ms = -1
        self.queues = {c: deque() for c in CLASSES}
        self.credit = dict.fromkeys(CLASSES, 0.0)
        self.in_flight: dict[str, Grant] = {}
        self.reserved = 0
        self.peeks_in_flight = 0
        self._pending_ids: set[str] = set()
        self._done: OrderedDict[str, int] = OrderedDict()
        self._late_rejections: list[Rejection] = []
        self.costs = CostBook(cfg.initial_unit_cost, cfg.cost_window, cfg.max_unit_cost)
        self.uncertain = 0  # what the calls in flight could cost beyond their estimates
        self.recharge = Recharge(
            enabled=cfg.recharge == "on", low=cfg.recharge_low,
            high_setting=cfg.recharge_high, timeout_ms=cfg.recharge_timeout_ms,
        )
        self.external_tokens = 0
        self.rejections_total = 0
        self.learned_cap = 10**12  # lowered when Keepa shows a smaller cap than 60 x rate
        self.nominal_cap = self.cap
        self._cap_candidate: int | None = None
        self.lost_at_cap_while_waiting = 0
        self.tokens_by_class = dict.fromkeys(CLASSES, 0)
        self.grants_by_class = dict.fromkeys(CLASSES, 0)
        self.last_grant_ms: int | None = None
        self.hold_cls: str | None = None
        self.hold_tokens = 0
        self.hold_until_ms: int | None = None

    # -- messages -------------------------------------------------------------------------------
    def request(self, req: Request, now_ms: int) -> Rejection | None:
        """Queue a request; a repeated id changes nothing. Returns a Rejection if it can never run."""
        if req.id in self._pending_ids or req.id in self.in_flight or req.id in self._done:
            return None
        if self.synced:
            rejection = self._impossible(req)
            if rejection:
                self._remember(req.id, now_ms)
                self.rejections_total += 1
                return rejection
        self.queues[req.cls].append(req)
        self._pending_ids.add(req.id)
        return None

    def settle(self, grant_id: str, envelope: Envelope, now_ms: int) -> bool:
        """Reconcile a finished call with Keepa's numbers. A repeated settle changes nothing."""
        grant = self.in_flight.pop(grant_id, None)
        if grant is None:
            return False
        cls, units = grant.request.cls, grant.request.units
        self.reserved -= grant.estimate
        self.uncertain -= grant.uncertainty
        if cls == PEEK:
            self.peeks_in_flight -= 1
        consumed = envelope.tokens_consumed
        if consumed > 0 and grant.request.cost is None:
            self.costs.learn(cls, units, consumed)
        self.tokens_by_class[cls] += consumed
        self.balance += grant.estimate - consumed
        self._remember(grant_id, now_ms)
        if grant.request.continues and self.hold_cls == cls and self.hold_until_ms is None:
            self.hold_until_ms = now_ms + self.cfg.hold_grace_ms
        if envelope.timestamp_ms >= self.last_sync_ms:
            self._advance(envelope.timestamp_ms)
            if grant.alone and envelope.timestamp_ms < grant.refill_due_ms:
                self._explain_drift(grant, envelope)
            self.sync(envelope, now_ms)
        return True

    def _explain_drift(self, grant: Grant, envelope: Envelope) -> None:
        """Keepa's balance before this call is lower than the model's: either something outside
        the governor spent tokens, or the plan's cap is lower than 60 x rate and refills overflowed.
        A cap shows as the same ceiling twice in a row; anything else is external spending."""
        before_call = envelope.tokens_left + envelope.tokens_consumed
        drift = grant.balance_before - before_call
        if drift <= 0:
            return
        plausible = self.nominal_cap // 2 <= before_call < self.cap  # an empty bucket is no ceiling
        if plausible and before_call == self._cap_candidate:
            self.learned_cap = before_call
            self.cap = before_call
        else:
            self._cap_candidate = before_call
            self.external_tokens += drift

    def release(self, grant_id: str, now_ms: int) -> bool:
        """A granted call ended with no envelope (timeout, reset): Keepa may or may not have charged
        it, so its reservation stays spent until the next envelope says otherwise."""
        grant = self.in_flight.pop(grant_id, None)
        if grant is None:
            return False
        self.reserved -= grant.estimate
        self.uncertain -= grant.uncertainty
        if grant.request.cls == PEEK:
            self.peeks_in_flight -= 1
        self._remember(grant_id, now_ms)
        return True

    def sync(self, envelope: Envelope, now_ms: int) -> None:
        """Take Keepa's envelope as the truth (stale envelopes are ignored)."""
        if envelope.timestamp_ms < self.last_sync_ms:
            return
        first = not self.synced
        self.synced = True
        self.last_sync_ms = envelope.timestamp_ms
        self.rate = envelope.refill_rate
        cap = self.nominal_cap = self.cfg.max_tokens or CAP_MINUTES * envelope.refill_rate
        if envelope.tokens_left > self.learned_cap:
            self.learned_cap = envelope.tokens_left
        self.cap = min(cap, self.learned_cap)
        self.balance = envelope.tokens_left - self.reserved
        self.next_refill_ms = envelope.timestamp_ms + (envelope.refill_in_ms or self.cfg.period_ms)
        if self.cfg.recharge == "auto":
            self.recharge.enabled = self.rate < self.cfg.recharge_below_rate
        if first:
            self._reject_impossible_queued(now_ms)
        self._advance(self.keepa_ms(now_ms))

    # -- the decision ---------------------------------------------------------------------------
    def decide(self, now_ms: int) -> Decision:
        decision = Decision()
        if self._late_rejections:
            decision.rejections, self._late_rejections = self._late_rejections, []
        if not self.synced:
            return decision
        self._advance(self.keepa_ms(now_ms))
        if self.hold_until_ms is not None and now_ms >= self.hold_until_ms:
            self.hold_cls, self.hold_tokens, self.hold_until_ms = None, 0, None
        self.recharge.update(self.balance, self.cap, self.rate, now_ms)
        floor, grants = self.cfg.floor, decision.grants
        while self.balance - self.uncertain > floor:
            cls = self._pick(overflow=self.balance + self.rate > self.cap)
            if cls is None:
                break
            grants.append(self._grant(cls, now_ms))
            self.recharge.update(self.balance, self.cap, self.rate, now_ms)
        if self._pending_ids:
            wake = self.next_refill_ms + self.clock_offset_ms   # the refill, on the host clock
            deadline = self.recharge.deadline_ms()
            decision.wake_at_ms = wake if deadline is None else min(wake, deadline)
        return decision

    def _pick(self, overflow: bool) -> str | None:
        first = None
        for cls in CLASSES:
            if not self.queues[cls] or not (overflow or self._eligible(cls)):
                continue
            if self.credit[cls] > 0:
                return cls
            if first is None:
                first = cls
        return first

    def _eligible(self, cls: str) -> bool:
        if self.recharge.active and cls not in self.cfg.recharge_exempt:
            return False
        if (self.hold_cls is not None and cls != self.hold_cls
                and self.balance - self.estimate(self.queues[cls][0]) - self.hold_tokens <= self.cfg.floor):
            return False  # the held class's next calls must find a positive balance
        if cls == PEEK:
            return len(self.queues[COMMIT]) + self.peeks_in_flight < self.cfg.peek_buffer
        head = self.queues[cls][0]
        if cls == UPSERT and head.units > 1:
            # a scan grant's pages are separate calls made at once, and Keepa takes each one only
            # at a positive balance: the balance must stay above the floor until the last of them
            before_last = self.estimate(head) * (head.units - 1) / head.units
            return self.balance - self.uncertain - before_last > self.cfg.floor
        return True

    def _grant(self, cls: str, now_ms: int) -> Grant:
        req = self.queues[cls].popleft()
        self._pending_ids.discard(req.id)
        estimate = self.estimate(req)
        if self.credit[cls] > 0:
            self.credit[cls] -= estimate
        self.balance -= estimate
        self.reserved += estimate
        if cls == PEEK:
            self.peeks_in_flight += 1
        uncertainty = 0 if req.cost is not None else self.costs.uncertainty(cls, req.units, estimate)
        self.uncertain += uncertainty
        grant = Grant(req, estimate, now_ms, self.balance + estimate, not self.in_flight, self.next_refill_ms,
                      uncertainty)
        if req.continues:
            reserve = min(estimate * self.cfg.hold_calls, self.cap // 10)
            self.hold_cls, self.hold_tokens, self.hold_until_ms = cls, reserve, None
        elif self.hold_cls == cls:
            self.hold_cls, self.hold_tokens, self.hold_until_ms = None, 0, None
        self.in_flight[req.id] = grant
        self.grants_by_class[cls] += 1
        self.last_grant_ms = now_ms
        return grant

    # -- the model ------------------------------------------------------------------------------
    def keepa_ms(self, now_ms: int) -> int:
        """A host time on Keepa's clock."""
        return now_ms - self.clock_offset_ms

    def estimate(self, req: Request) -> int:
        return req.cost if req.cost is not None else self.costs.reserve(req.cls, req.units)

    def _advance(self, keepa_now_ms: int) -> None:
        """Apply the refills the model expects up to ``keepa_now_ms`` (Keepa's clock) and share them
        out as credit."""
        period = self.cfg.period_ms
        while self.next_refill_ms is not None and self.next_refill_ms <= keepa_now_ms:
            rate = self.rate
            credited = min(rate, max(0, self.cap - self.balance))
            if credited < rate and self._pending_ids:
                self.lost_at_cap_while_waiting += rate - credited
            self.balance += credited
            self.next_refill_ms += period
            self._share(rate)

    def _share(self, amount: int) -> None:
        waiting = [c for c in CLASSES if self.queues[c]]
        if not waiting:
            return
        weights = self.cfg.weights
        total = sum(weights[c] for c in waiting)
        for cls in waiting:
            portion = amount * weights[cls] / total
            ceiling = max(self.costs.reserve(cls, 1), portion)
            self.credit[cls] = min(ceiling, self.credit[cls] + portion)

    def _impossible(self, req: Request) -> Rejection | None:
        """Only the plan's stated size decides this: a learned cap is a guess and may be low."""
        estimate = self.estimate(req)
        if self.nominal_cap and estimate > self.nominal_cap:
            return Rejection(req, (
                f"request {req.id} ({req.cls}, {req.units} unit(s)) is estimated at {estimate} tokens, "
                f"more than the bucket can ever hold ({self.nominal_cap} tokens): it could never be granted; "
                f"split it into smaller calls"
            ))
        return None

    def _reject_impossible_queued(self, now_ms: int) -> None:
        for cls in CLASSES:
            keep = deque()
            for req in self.queues[cls]:
                rejection = self._impossible(req)
                if rejection:
                    self._pending_ids.discard(req.id)
                    self._remember(req.id, now_ms)
                    self.rejections_total += 1
                    self._late_rejections.append(rejection)
                else:
                    keep.append(req)
            self.queues[cls] = keep

    def _remember(self, request_id: str, now_ms: int) -> None:
        """Remember a finished id for ``remember_ms`` (redeliveries come within minutes) and at
        most ``remember_done`` of them, so memory follows the traffic, not the time run."""
        done = self._done
        done[request_id] = now_ms
        horizon = now_ms - self.cfg.remember_ms
        while done and (len(done) > self.cfg.remember_done or next(iter(done.values())) < horizon):
            done.popitem(last=False)

    # -- views ----------------------------------------------------------------------------------
    def pending(self, cls: str | None = None) -> int:
        if cls is None:
            return len(self._pending_ids)
        return len(self.queues[cls])

    def recharge_high(self) -> int:
        return self.recharge.high(self.cap, self.rate)
