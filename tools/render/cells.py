"""Table assembly and the formatting of cells: numbers, times and dates."""


def pct(value, digits=1):
    """A fraction as a percentage; '-' where there is none."""
    return "-" if value is None else f"{100 * value:.{digits}f} %"


def num(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def ratio(value):
    return "-" if value is None else f"{value:.2f}x"


def whole(value):
    return "-" if value is None else f"{value:,.0f}"


def ms(value):
    return f"{value:.2f} ms"


def minutes(seconds):
    return f"{seconds / 60:.0f} min"


def duration(seconds):
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def utc_minute(timestamp):
    """An ISO timestamp to the minute: '2026-12-01 14:03'."""
    return timestamp[:16].replace("T", " ")


def in_order(keys, order):
    """``keys`` in the order of ``order``, those not in it after."""
    order = list(order)
    return sorted(keys, key=lambda k: order.index(k) if k in order else len(order))


def listed(values):
    return ", ".join(map(str, values))


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def paragraphs(*parts):
    """The parts of a block, a blank line apart."""
    return "\n\n".join(parts)
