#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Dump the logical content of a regf hive with an independent Python reader.

Usage: hive_dump.py regipy|dissect HIVE

Prints one JSON document on stdout:

    {"reader": "regipy", "keys": [
        {"path": ["<hex>", ...], "values": [{"name": "<hex>", "type": 1, "data": "<hex>"}]}
    ]}

`path` lists the key's name components below the root (the root key itself
has an empty path). Every name is given as the hex of its UTF-16LE code units,
so that names survive the trip exactly (lone surrogates included); compressed
(Latin-1) names are widened byte by byte, as Windows reads them. `data` is the
hex of the value's raw bytes, exactly as the reader returned them.

The test harness in crates/reseal-hive/tests/common turns this into its Dump.

Reader notes (the reasons for the small amount of glue below):

* Both libraries decode names themselves in ways that lose information
  (regipy decodes compressed names as ASCII with replacement characters,
  dissect.regf tries UTF-8 before Latin-1 and falls back to repr()), so this
  script takes the raw name bytes and the COMP_NAME flag the reader parsed
  and widens them here.
* regipy's high-level API converts and trims value data (strings decoded,
  binaries truncated to 256 hex digits, type 0x200000 skipped) and finds the
  root as "the first allocated cell of the first bin". This script instead
  uses regipy's record parsers (CM_KEY_NODE, VALUE_KEY, subkey lists, big
  data) and starts from the base block's root cell offset.
* dissect.regf treats a value as big data (db) only when the hive's minor
  version is greater than 4; Windows uses db cells from minor 4 on. A 1.4 hive
  with a value over 16344 bytes therefore reads differently here.
"""

import io
import json
import struct
import sys

MAX_DEPTH = 512


def widen(raw, compressed):
    """Return the hex of the UTF-16LE code units of a stored name."""
    if compressed:
        return b"".join(bytes((b, 0)) for b in raw).hex()
    if len(raw) % 2:
        raise ValueError("odd length UTF-16 name: %s" % raw.hex())
    return raw.hex()


def dump_regipy(path):
    from regipy.registry import NKRecord
    from regipy.structs import REGF_HEADER, VALUE_KEY
    import regipy.registry as reg

    with open(path, "rb") as f:
        stream = io.BytesIO(f.read())
    header = REGF_HEADER.parse_stream(stream)
    base = 4096

    def nk_at(offset):
        # regipy's NKRecord expects the position just after the "nk" signature.
        stream.seek(base + offset)
        size = -struct.unpack("<i", stream.read(4))[0]
        sig = stream.read(2)
        if sig != b"nk":
            raise ValueError("expected nk at cell 0x%x, found %r" % (offset, sig))
        return NKRecord(reg.Cell(cell_type="nk", offset=base + offset + 6, size=size), stream)

    def values_of(nk):
        out = []
        count = nk.header.values_count
        if not count:
            return out
        stream.seek(base + 4 + nk.header.values_list_offset)
        offsets = struct.unpack("<%dI" % count, stream.read(4 * count))
        for off in offsets:
            stream.seek(base + 4 + off)
            vk = VALUE_KEY.parse_stream(stream)
            if vk.data_size & 0x80000000:
                size = vk.data_size & 0x7FFFFFFF
                data = struct.pack("<I", vk.data_offset)[:size]
            else:
                raw = NKRecord.read_value(vk, stream)
                if vk.data_size > 0x3FD8 and raw.value[:2] == b"db":
                    data = NKRecord._parse_indirect_block(stream, raw)
                else:
                    data = raw.value
                if len(data) != vk.data_size:
                    raise ValueError("value data truncated at cell 0x%x" % off)
            name = widen(vk.name, bool(vk.flags.VALUE_COMP_NAME))
            out.append({"name": name, "type": int(vk.data_type), "data": data.hex()})
        return out

    def subkeys_of(nk):
        if not nk.header.subkey_count:
            return []
        return list(nk.iter_subkeys())

    keys = []
    stack = [(nk_at(header.root_key_offset), [])]
    while stack:
        nk, comps = stack.pop()
        if len(comps) > MAX_DEPTH:
            raise ValueError("key tree deeper than %d" % MAX_DEPTH)
        keys.append({"path": comps, "values": values_of(nk)})
        for sub in subkeys_of(nk):
            name = widen(sub.header.key_name_string, bool(sub.header.flags.KEY_COMP_NAME))
            stack.append((sub, comps + [name]))
    return keys


def dump_dissect(path):
    from dissect.regf import regf

    # dissect.regf keeps only the parsed fixed part of a cell; remember the
    # whole cell so that the stored name bytes can be read back.
    original_init = regf.Cell.__init__

    def keep_raw(self, hive, data, *args, **kwargs):
        original_init(self, hive, data, *args, **kwargs)
        self.raw_cell = data

    regf.Cell.__init__ = keep_raw

    def raw_name(obj):
        fixed = len(type(obj).__struct__)
        return obj.raw_cell[fixed:][: obj.cell.NameLength]

    keys = []
    with open(path, "rb") as f:
        hive = regf.RegistryHive(f)
        stack = [(hive.root(), [])]
        while stack:
            key, comps = stack.pop()
            if len(comps) > MAX_DEPTH:
                raise ValueError("key tree deeper than %d" % MAX_DEPTH)
            values = []
            for v in key.values():
                compressed = regf.VALUE.COMP_NAME in v.cell.Flags
                name = widen(raw_name(v), compressed)
                values.append({"name": name, "type": int(v.type), "data": v.data.hex()})
            keys.append({"path": comps, "values": values})
            for sub in key.subkeys():
                compressed = regf.KEY.COMP_NAME in sub.cell.Flags
                stack.append((sub, comps + [widen(raw_name(sub), compressed)]))
    return keys


def main(argv):
    if len(argv) != 3 or argv[1] not in ("regipy", "dissect"):
        sys.stderr.write("usage: hive_dump.py regipy|dissect HIVE\n")
        return 2
    reader, path = argv[1], argv[2]
    try:
        keys = dump_regipy(path) if reader == "regipy" else dump_dissect(path)
    except Exception as exc:  # report any reader failure as a clean error
        sys.stderr.write("%s failed on %s: %s: %s\n" % (reader, path, type(exc).__name__, exc))
        return 1
    json.dump({"reader": reader, "keys": keys}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
