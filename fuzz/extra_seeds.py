"""Extra seeds for fuzz target decode_single_event: events no fixture holds.

    python3 fuzz/extra_seeds.py FIXTURES_DIR OUT_DIR [MARIADB_COMPRESSED_BINLOG]

Writes, each after the MySQL 8.0.26 FORMAT_DESCRIPTION of mysql_type_bit.000001:
TRANSACTION_PAYLOAD events (zstd, via the `zstd` command, and uncompressed) holding that
fixture's TABLE_MAP, WRITE_ROWS and XID; a GTID_TAGGED event; a tagged PREVIOUS_GTIDS event;
and, given a binlog written by MariaDB with log_bin_compress=ON (e.g. kept from
crates/sluice-binlog/tests/mariadb_compressed.rs with SLUICE_KEEP_TESTDB=1), its compressed
QUERY/rows events after its FORMAT_DESCRIPTION and last TABLE_MAP. The layouts are those of
crates/sluice-binlog/src/payload.rs and mysql_gtid.rs.
"""
import os
import struct
import subprocess
import sys

fx = sys.argv[1].rstrip('/') + '/'
OUT = sys.argv[2]
HEADER_LEN = 19


def raw_events(path):
    """The raw events of a binlog file (after the 4-byte magic)."""
    data = open(path, 'rb').read()
    at, out = 4, []
    while at + HEADER_LEN <= len(data):
        size = struct.unpack('<I', data[at + 9:at + 13])[0]
        if size < HEADER_LEN:
            break
        out.append(data[at:at + size])
        at += size
    return out


def first_of_type(events, type_code):
    return [e for e in events if e[4] == type_code][0]


def event(type_code, body):
    """A whole event with a zero checksum (the target does not verify checksums)."""
    size = HEADER_LEN + len(body) + 4
    return struct.pack('<IBIIIH', 1700000000, type_code, 1, size, 0, 0) + body + b'\0\0\0\0'


def without_checksum(raw):
    return raw[:-4]


def lenenc(n):
    if n < 251:
        return bytes([n])
    if n < 65536:
        return b'\xfc' + struct.pack('<H', n)
    return b'\xfd' + struct.pack('<I', n)[:3]


def payload_field(kind, value):
    encoded = lenenc(value)
    return lenenc(kind) + lenenc(len(encoded)) + encoded


def varlen(v):
    """A variable-length integer of the MySQL serialization library."""
    if v >= 1 << 56:
        return b'\xff' + struct.pack('<Q', v)
    length = 1
    while v >= 1 << (7 * length):
        length += 1
    return ((v << length) | ((1 << (length - 1)) - 1)).to_bytes(8, 'little')[:length]


def varlen_signed(v):
    return varlen(v << 1 if v >= 0 else ((-(v + 1)) << 1) | 1)


def write(name, data):
    with open(os.path.join(OUT, name), 'wb') as f:
        f.write(data)


os.makedirs(OUT, exist_ok=True)
mysql = raw_events(fx + 'mysql_type_bit.000001')
fde = first_of_type(mysql, 15)

# TRANSACTION_PAYLOAD: TABLE_MAP, WRITE_ROWS, XID without checksums, zstd or uncompressed.
inner = b''.join(without_checksum(first_of_type(mysql, t)) for t in (19, 30, 16))
zstd = subprocess.run(['zstd', '-3', '-c', '-q'], input=inner, capture_output=True, check=True).stdout
write('payload-zstd', fde + event(40, payload_field(2, 0) + payload_field(3, len(inner))
                                  + payload_field(1, len(zstd)) + b'\0' + zstd))
write('payload-none', fde + event(40, payload_field(2, 255) + payload_field(1, len(inner)) + b'\0' + inner))

# GTID_TAGGED: flags, UUID, GNO 17, tag "blue", clock, timestamp, length, version, ticket.
uuid = bytes.fromhex('3e11fa4771ca11e19e33c80aa9429562')
fields = (varlen(0) + varlen(1) + varlen(1) + b''.join(varlen(b) for b in uuid)
          + varlen(2) + varlen_signed(17) + varlen(3) + varlen(4) + b'blue'
          + varlen(4) + varlen_signed(41) + varlen(5) + varlen_signed(42)
          + varlen(6) + varlen(1732000000123456) + varlen(8) + varlen(1234)
          + varlen(9) + varlen(80400) + varlen(11) + varlen(7))
last_non_ignorable = varlen(2)
size = 1 + len(last_non_ignorable) + len(fields)
while 1 + len(varlen(size)) + len(last_non_ignorable) + len(fields) != size:
    size += 1
write('gtid-tagged', fde + event(42, bytes([2]) + varlen(size) + last_non_ignorable + fields))

# Tagged PREVIOUS_GTIDS: uuid:1-5:7 and uuid:blue:1-3 (interval ends exclusive).
previous = (struct.pack('<Q', (1 << 56) | (2 << 8) | 1)
            + uuid + varlen(0) + struct.pack('<QQQQQ', 2, 1, 6, 7, 8)
            + uuid + varlen(4) + b'blue' + struct.pack('<QQQ', 1, 1, 4))
write('previous-tagged', fde + event(35, previous))
write('gtid-8026', fde + first_of_type(mysql, 33))

if len(sys.argv) > 3:
    maria = raw_events(sys.argv[3])
    maria_fde = first_of_type(maria, 15)
    maria_table_map = [e for e in maria if e[4] == 19][-1]
    for e in maria:
        if 165 <= e[4] <= 171:
            write(f'mariadb-{e[4]}-{len(e)}', maria_fde + maria_table_map + e)
print('seeds written to', OUT)
