"""The decoded ISO 8583 message both ends work with."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Message:
    """An MTI and its data elements.

    Field values are text exactly as the codec carries them: numerics as
    digits, binary fields (52, 55, 64 …) as upper-case hex. Keeping one text
    form for every dialect is what lets the host and terminal logic ignore
    how the bytes were packed.
    """

    mti: str
    fields: dict[int, str] = field(default_factory=dict)

    def __getitem__(self, number: int) -> str:
        return self.fields[number]

    def __setitem__(self, number: int, value: str) -> None:
        self.fields[number] = value

    def __contains__(self, number: object) -> bool:
        return number in self.fields

    def get(self, number: int, default: str | None = None) -> str | None:
        return self.fields.get(number, default)

    @property
    def is_response(self) -> bool:
        return self.mti[2] in "13"


def response_mti(mti: str) -> str:
    """The MTI that answers `mti`: 0200→0210, 0401→0410, 0220→0230.

    The repeat digit is dropped so a repeat is answered like the original.
    """
    function = {"0": "1", "2": "3"}.get(mti[2])
    if function is None:
        raise ValueError(f"MTI {mti} is not a request or advice")
    return f"{mti[:2]}{function}0"
