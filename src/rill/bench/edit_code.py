"""The edit prompt set's code: small, ordinary Python modules (~220-280 tokens each), and
names each uses throughout, to rename (old, new)."""

MODULES: list[tuple[str, list[tuple[str, str]]]] = [
    ('''import json
from pathlib import Path


class Inventory:
    """Items in stock, loaded from and saved to a JSON file."""

    def __init__(self, path):
        self.path = Path(path)
        self.items = {}

    def load(self):
        if self.path.exists():
            self.items = json.loads(self.path.read_text())
        return self

    def add(self, name, quantity=1):
        self.items[name] = self.items.get(name, 0) + quantity

    def remove(self, name, quantity=1):
        left = self.items.get(name, 0) - quantity
        if left <= 0:
            self.items.pop(name, None)
        else:
            self.items[name] = left

    def total(self):
        return sum(self.items.values())

    def save(self):
        self.path.write_text(json.dumps(self.items, indent=2))
''',
     [('items', 'stock'), ('quantity', 'count'), ('Inventory', 'Store')]),
    ('''import time


class RateLimiter:
    """Allows at most `rate` calls per second, with bursts of up to `burst` calls."""

    def __init__(self, rate, burst):
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = time.monotonic()

    def _refill(self):
        now = time.monotonic()
        elapsed = now - self.updated
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.updated = now

    def allow(self):
        self._refill()
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def wait(self):
        while not self.allow():
            time.sleep(1 / self.rate)
''',
     [('tokens', 'credits'), ('RateLimiter', 'Throttle'), ('updated', 'last_refill')]),
    ('''def parse_line(line):
    """Split a CSV line into fields, honouring double quotes."""
    fields = []
    current = ""
    quoted = False
    for char in line:
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            fields.append(current)
            current = ""
        else:
            current += char
    fields.append(current)
    return fields


def read_rows(path):
    """Every line of the file at `path`, parsed, without the header."""
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    return [parse_line(line) for line in lines[1:] if line]


def column(rows, index):
    """The values of one column, as floats where they parse."""
    values = []
    for row in rows:
        try:
            values.append(float(row[index]))
        except (ValueError, IndexError):
            continue
    return values
''',
     [('fields', 'cells'), ('current', 'field'), ('quoted', 'in_quotes')]),
    ('''from dataclasses import dataclass


@dataclass
class Account:
    owner: str
    balance: float = 0.0

    def deposit(self, amount):
        if amount <= 0:
            raise ValueError("deposit must be positive")
        self.balance += amount
        return self.balance

    def withdraw(self, amount):
        if amount > self.balance:
            raise ValueError("insufficient funds")
        self.balance -= amount
        return self.balance


def transfer(source, target, amount):
    """Move `amount` from one account to another, or neither if it fails."""
    source.withdraw(amount)
    try:
        target.deposit(amount)
    except ValueError:
        source.deposit(amount)
        raise
''',
     [('amount', 'value'), ('balance', 'funds'), ('Account', 'Wallet')]),
]
