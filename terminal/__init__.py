"""The POS terminal emulator: profiles, cards, transaction flows, persisted state and links."""

from .cards import Card, CardError, resolve_card
from .link import Link, LinkError, LinkTimeout, TcpLink
from .profile import ProfileError, TerminalProfile, load_profile
from .state import StateError, TerminalState, default_state_path
from .results import AdviceOutcome, AdviceRun, BatchCloseResult, ReversalOutcome, TerminalError, TransactionResult
from .terminal import Terminal

__all__ = [
    "Card", "CardError", "resolve_card",
    "Link", "LinkError", "LinkTimeout", "TcpLink",
    "ProfileError", "TerminalProfile", "load_profile",
    "StateError", "TerminalState", "default_state_path",
    "AdviceOutcome", "AdviceRun", "BatchCloseResult", "ReversalOutcome", "Terminal", "TerminalError", "TransactionResult",
]
