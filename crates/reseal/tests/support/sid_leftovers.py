"""Independent check (regipy) that a hive holds no trace of a SID.

usage: sid_leftovers.py HIVE OLD_SID OLD_TAIL_HEX
Prints one JSON object: counts of keys and values read, and every key
name, value name or value whose data mentions the SID (string form, or the
binary form of its three sub-authorities).
"""
import json
import logging
import sys

from regipy.registry import RegistryHive

logging.disable(logging.CRITICAL)

path, sid, tail = sys.argv[1], sys.argv[2].lower(), sys.argv[3].lower()
needles_text = [sid]
hits = []
keys = values = 0


def text_hit(s):
    s = s.lower()
    return any(n in s for n in needles_text) or tail in s.replace(",", "").replace(" ", "")


def data_hit(v):
    if v is None or isinstance(v, (int, float)):
        return False
    if isinstance(v, (bytes, bytearray)):
        b = bytes(v)
        if tail in b.hex():
            return True
        for enc in ("utf-16-le", "latin-1"):
            try:
                if sid in b.decode(enc, "ignore").lower():
                    return True
            except Exception:
                pass
        return False
    if isinstance(v, (list, tuple)):
        return any(data_hit(x) for x in v)
    return text_hit(str(v))


hive = RegistryHive(path)
for sk in hive.recurse_subkeys(as_json=False):
    keys += 1
    if text_hit(sk.path):
        hits.append({"key": sk.path})
    for v in sk.values or []:
        values += 1
        if text_hit(str(v.name)):
            hits.append({"key": sk.path, "value_name": str(v.name)})
        if data_hit(v.value):
            hits.append({"key": sk.path, "value": str(v.name)})
print(json.dumps({"keys": keys, "values": values, "hits": hits}))
