#!/usr/bin/env python3
"""Writes the hand-made seeds of every fuzz target to fuzz/corpus/NAME/seed-*:
realistic valid inputs and the edge cases each parser must refuse. The
corpus committed is these seeds merged with what fuzzing found
(scripts/fuzz.sh merge); run this again after changing a seed.

Usage: fuzz/make_seeds.py [NAME...]"""
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
UUID = "0190a6f0-8b1c-7d2e-9f30-4a5b6c7d8e9f"
TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
DATA = '{"order_id":"%s","user_id":"user-456","amount":1000,"items":[{"sku":"SKU-1","quantity":2}],"price":19.99,"big":123456789012345678901234567890}' % UUID


def envelope(data=DATA, **extra):
    attrs = [("specversion", "1.0"), ("id", UUID), ("source", "/orders"),
             ("type", "OrderCreated"), ("subject", "order-1"),
             ("time", "2026-01-02T03:04:05.678Z"), ("datacontenttype", "application/json"),
             ("partitionkey", "order-1")]
    attrs += list(extra.items())
    head = ",".join('"%s":%s' % (k, json.dumps(v)) for k, v in attrs)
    return '{%s,"data":%s}' % (head, data)


ENV = envelope()
ENV_TP = envelope(traceparent=TP)


def seeds_json():
    s = [
        DATA, '{"a":1,"b":[true,false,null],"c":{"d":"e"}}', "[]", "{}", '""', "0", "-0.0e+10",
        "123456789012345678901234567890", "1.5E-300", '"a\\u0000b"', '"\\ud83d\\ude00"',
        '"\\ud800"', '"\\udc00x"', '"\\"\\\\\\/\\b\\f\\n\\r\\t"', ' \t\r\n{"x" : [ 1 , 2 ] }\n',
        '{"data":1,"data":2}', '{"id":"x","data":{"id":"y"}}', '"\u00e9\u4e2d\U0001f600"',
        "[1,]", "{\"a\":1,}", "01", "1.", ".5", "+1", "-", "tru", "nul", "NaN", "Infinity",
        '"\\x41"', '"\\u12"', '"unterminated', '{"a" 1}', "[1 2]", "\ufeff{}", '"\x01"',
        "1 2", '{"a":1}x', "[" * 600 + "]" * 600, "[" * 520 + "1" + "]" * 519,
        '{"headers":{"k":"v","n":1.50,"o":{"x":[1,2]},"t":true,"z":null}}',
        '{"k":"v","n":1.50,"big":123456789012345678901234567890,"o":{"x":[1, 2]},"e":"a\\u0000b"}',
        '{"a\\u0000b":"x","":"empty","\\u00e9":"\\u00e9"}',
    ]
    out = [x.encode() for x in s]
    out += [b'"\xc3\x28"', b'"\xed\xa0\x80"', b'"\xf4\x90\x80\x80"', b'"\xc0\xaf"', b"0\x00",
            b'"\xe2\x82"', b"\xff", b'{"a":"\xf0\x9f\x98\x80"}']
    return out


def seeds_envelope():
    s = [ENV, ENV_TP, envelope(data='"a\\u0000b"'), envelope(data="0.1"), envelope(data="null"),
         ENV.replace(',"data":' + DATA, ""), ENV.replace('"1.0"', '"0.3"'),
         ENV.replace(UUID, "not-a-uuid"), ENV.replace('"source":"/orders",', ""),
         ENV[:-1] + ',"data":1}', "[]", "{}", '{"specversion":"1.0"}', ENV + " x",
         envelope(data='{"a": [1, 2, {"b": "c"}]}'), ENV.replace('"OrderCreated"', '"\\ud800"'),
         "OrderCreated\norder-1\n/orders\n%s\n%s" % (TP, DATA),
         "OrderCreated\norder-1\n\n\n{\"a\": 1,\n \"b\": \"x y\"}",
         "UserCreated\nuser-\u00e9\n/users\n\n[1, 2.50, 123456789012345678901234567890]",
         "T\"q\\\x01\nk\n/s\n\nnull", "T\nk\n/s\n\n{\"a\":", "T\nk\n/s\n\n"]
    out = [x.encode() for x in s]
    out += [b"T\xff\nk\n/s\n\n{}", b"T\nk\xc3\n/s\n\n{}", b"T\nk\n/s\n\n\"\xc3\xa9\""]
    return out


def seeds_idempotency_key():
    s = [b"order-123", UUID.encode(), b'"order-123"', b'"a\\"b\\\\c"', b'"', b'""', b'"abc',
         b'"ab"c"', b'"a\\x"', b"", b"a" * 255, b"a" * 256, b'"' + b"b" * 255 + b'"',
         b'"' + b"b" * 256 + b'"', b"key\x00evil", b"key\r\nX: y", b"tab\tkey", b"caf\xc3\xa9",
         b"\x7f", b"  spaced key  ", b'"\\"'] 
    return s


def seeds_conf():
    s = [
        "workers=5\nbatch_size=100\npoll_interval=250ms\nnotify=true\nack_mode=mark\n"
        "processed_retention=7d\npublish_timeout=10s\nlog_level=debug\nlog_format=text\n",
        "database_url=postgres://app:s3cret@db:5432/outbox?sslmode=require\n",
        "database_url=host=db port=5432 user=app password='p w' dbname=outbox\n",
        "db_host=db.internal\ndb_port=5432\ndb_user=app\ndb_password=p'w\\d x\ndb_name=outbox db\n",
        "db_password=secret-password\nwebhook_secret=hook-secret\nredis_password=redis-secret\n",
        "--workers=3\n--no-notify\n--batch-size\n--poll_interval=2s\n",
        "--help\n-h\n--\n--workers=2\n", "--unknown=1\n", "--workers\n",
        "poll_interval=nan\n", "poll_interval=inf\n", "poll_interval=-1s\n", "poll_interval=1e300d\n",
        "poll_interval=0x10\n", "poll_interval=1.5h\n", "poll_interval=9000000000000000\n",
        "workers=0\n", "workers=257\n", "workers=99999999999999999999\n", "workers= 5\n",
        "workers=+5\n", "workers=5x\n", "notify=yes\nnotify=maybe\n", "ack_mode=delete|mark\n",
        "ack_mode=\n", "Workers=4\nBATCH-SIZE=7\n", "outbox_table=orders_outbox\n",
        "outbox_table=pg_x\n", "x" * 70 + "=1\n", "=\n", "\n\n",
    ]
    return [x.encode() for x in s]


def seeds_url():
    s = [
        "redis://127.0.0.1:6379", "redis://:s3cret@redis:6379/2", "redis://user:pass@h/0",
        "redis+pubsub://:pw@h:1", "redis://h:0", "redis://h:65536", "redis://h:x", "redis://h/x",
        "redis://mypassword@h", "REDIS://H", "redis:", "redis://",
        "amqp://guest:guest@127.0.0.1:5672/", "amqps://u:p%40ss@rabbit:5671/%2fvhost",
        "amqp://u:pa/ss@h/v", "amqp://h:99999", "amqp://[::1]:5672/",
        "nats://127.0.0.1:4222", "nats://u:p@h1:4222,h2:4223,nats://h3", "nats://token@h",
        "nats://u:pa/ss@h:4222", "nats://u:p@ss@h", "nats://[::1]:4222", "nats://h:0",
        "nats://,", "nats://" + ",".join("h%d" % i for i in range(40)),
        "kafka://127.0.0.1:9092", "kafka://u:p@h1:9092,h2:9093", "kafka://u:pa/ss@h:9092",
        "kafka://h", "kafka://h:x", "kafka://:9092", "kafka://h:9092/x?y#z",
        "http://127.0.0.1:8080/hook", "https://user:pass@hooks.example.com/in?token=abc",
        "http://h/path?password=secret&x=1", "http://[::1]:80/", "http://", "https://h:99999/",
        "opensearch+http://admin:admin@localhost:9200/cars-",
        "opensearch+https://os:9200/", "opensearch+http://h/a/b", "opensearch+ftp://h/",
        "postgres://app:s3cret@db:5432/x?sslmode=require",
        "postgresql://app@db/x?password=secret&application_name=relay",
        "host=db port=5432 user=app password='a b\\' c' dbname=x",
        "host=db password = hunter22 dbname=x", "host=db password=a\\ b dbname=x",
        "host=db sslpassword=keypass", "password=", "host=h password='unterminated",
        "mem:test", "sqlite:/tmp/x.db", "file:/tmp/events.ndjson", "stdout:", "local:",
        "", "://", "x://a:b@c@d/e@f",
    ]
    return [x.encode() for x in s]


def resp(v):
    if v is None:
        return b"$-1\r\n"
    if isinstance(v, int):
        return b":%d\r\n" % v
    if isinstance(v, str):
        v = v.encode()
    if isinstance(v, bytes):
        return b"$%d\r\n%s\r\n" % (len(v), v)
    return b"*%d\r\n" % len(v) + b"".join(resp(x) for x in v)


def seeds_consumer_redis():
    entry = lambda i, body: [("%d-0" % i), ["event", body, "topic", "orders"]]
    s = [
        resp([["orders", [entry(1, ENV), entry(2, ENV_TP)]]]),
        resp([["orders", [entry(1, envelope(data='"a\\u0000b"'))]], ["other", [entry(3, ENV)]]]),
        resp([["orders", [["5-0", None]]]]), resp([["orders", [["6-0", []]]]]),
        resp([["orders", [["7-0", ["event"]]]]]), resp([["orders", [entry(8, "not json")]]]),
        resp([["orders", []]]), resp(None), resp(["message", "orders", ENV]),
        resp(["subscribe", "orders", 1]), resp(["message", 1, ENV]), b"-ERR NOGROUP\r\n",
        b"+OK\r\n", resp([["orders", [[1, ["event", ENV]]]]]), resp([["orders", [entry(9, ENV)]]]) * 2,
    ]
    return s


def seeds_consumer_kafka():
    s = [
        "content-type: application/cloudevents+json\n\n" + ENV,
        "\n" + ENV_TP,
        "ce_specversion: 1.0\nce_id: %s\nce_source: /orders\nce_type: OrderCreated\n"
        "ce_subject: order-1\nce_partitionkey: order-1\nce_traceparent: %s\n"
        "content-type: application/json\n\n%s" % (UUID, TP, DATA),
        "ce_specversion: 1.0\nce_id: %s\nce_source: /orders\nce_type: OrderCreated\n\nplain text"
        % UUID,
        "ce_specversion: 1.0\nce_id: %s\nce_source: /s\nce_type: T\n\n" % UUID,
        "ce_specversion\nce_id: x\n\n{}", "CE_SPECVERSION: 1.0\nCe_Id: %s\n\n{}" % UUID,
        "content-type: text/plain\nce_specversion: 1.0\n\n\"x\"",
        "".join("ce_x%d: v\n" % i for i in range(40)) + "ce_specversion: 1.0\n\n1",
    ]
    out = [x.encode() for x in s]
    out.append(b"ce_specversion: 1.0\nce_id: " + UUID.encode() +
               b"\nce_source: /s\x00x\nce_type: T\xff\n\n{}")
    return out


def shortstr(s):
    s = s.encode() if isinstance(s, str) else s
    return bytes([len(s)]) + s


def table(entries):
    body = b""
    for k, kind, v in entries:
        body += shortstr(k) + kind
        if kind in (b"S", b"x"):
            v = v.encode() if isinstance(v, str) else v
            body += struct.pack(">I", len(v)) + v
        elif kind == b"I":
            body += struct.pack(">i", v)
        elif kind == b"t":
            body += bytes([v])
        elif kind == b"F":
            body += table(v)
    return struct.pack(">I", len(body)) + body


def props(content_type=None, headers=None, message_id=None, delivery_mode=None):
    flags, body = 0, b""
    if content_type is not None:
        flags |= 0x8000
        body += shortstr(content_type)
    if headers is not None:
        flags |= 0x2000
        body += table(headers)
    if delivery_mode is not None:
        flags |= 0x1000
        body += bytes([delivery_mode])
    if message_id is not None:
        flags |= 0x0100
        body += shortstr(message_id)
    return struct.pack(">H", flags) + body


def amqp_input(p, body):
    body = body.encode() if isinstance(body, str) else body
    return struct.pack(">H", len(p)) + p + body


def seeds_consumer_amqp():
    ce = [("ce_specversion", b"S", "1.0"), ("ce_id", b"S", UUID), ("ce_source", b"S", "/orders"),
          ("ce_type", b"S", "OrderCreated"), ("ce_subject", b"S", "order-1"),
          ("ce_traceparent", b"S", TP), ("x-other", b"I", 7), ("ce_bin", b"x", b"\x00\xff")]
    close = struct.pack(">H", 320) + shortstr("CONNECTION_FORCED - broker forced connection closure") + struct.pack(">HH", 0, 0)
    s = [
        amqp_input(props("application/cloudevents+json", message_id=UUID, delivery_mode=2), ENV),
        amqp_input(props(), ENV_TP),
        amqp_input(props("application/json", ce, message_id=UUID, delivery_mode=2), DATA),
        amqp_input(props(None, ce), "plain text body"),
        amqp_input(props("text/plain", ce[:4]), ""),
        amqp_input(props(None, [("ce_specversion", b"S", "1.0"), ("n", b"F", [("a", b"t", 1)])]), "{}"),
        amqp_input(props(None, [("ce_specversion", b"I", 1), ("ce_id", b"S", UUID)]), "1"),
        amqp_input(props(None, [("ce_specversion", b"S", "1.0"), ("ce_id", b"S", b"a\x00b")]), "1"),
        amqp_input(b"", close), amqp_input(b"\xff\xff", b""), b"\x00", b"",
    ]
    return s


def seeds_consumer_nats():
    ack = "$JS.ACK.ORDERS.group.1.5.5.1700000000000000000.0"
    ack2 = "$JS.ACK.ORDERS.group.3.6.6.1700000000000000000.12"
    s = [
        "%s\n\n%s" % (ack, ENV), "%s\n\n%s" % (ack2, ENV_TP), "\n\n" + ENV,
        "%s\nce-specversion: 1.0\nce-id: %s\nce-source: /orders\nce-type: OrderCreated\n"
        "ce-subject: order-1\ntraceparent: %s\ncontent-type: application/json\nNats-Msg-Id: %s\n\n%s"
        % (ack, UUID, TP, UUID, DATA),
        "%s\nce-specversion: 1.0\nce-id: %s\nce-source: /s\nce-type: T\n\nplain" % (ack, UUID),
        "$JS.ACK.x\n\n{}", "$JS.ACK.a.b.c.d.e.f.g.h.i.j.k.l\n\n{}", "_INBOX.x\nce-specversion: 1\n\n1",
        "%s\nce-specversion: 1.0\nce-specversion: 2\nce-id:%s\n\n[]" % (ack, UUID),
    ]
    return [x.encode() for x in s]


def seeds_orders():
    ok = {"user_id": "user-456", "items": [{"sku": "SKU-1", "quantity": 2}], "amount": 1000}
    s = [json.dumps(ok), TP + "\n" + json.dumps(ok),
         json.dumps({"user_id": "u", "amount": 100000000000,
                     "items": [{"sku": "S%d" % i, "quantity": 10000} for i in range(100)]}),
         json.dumps({"user_id": "u", "amount": 1, "items": [{"sku": "A", "quantity": 1}] * 2}),
         '{"user_id":"a\\u0000b","amount":1,"items":[{"sku":"A","quantity":1}]}',
         '{"user_id":"u","amount":1,"items":[{"sku":"A\\u0000x","quantity":1},{"sku":"A\\u0000y","quantity":1}]}',
         '{"user_id":"u","amount":1.5,"items":[]}', '{"user_id":"","amount":0,"items":{}}',
         '{"user_id":"u","amount":100000000001,"items":[1]}', '{"user_id":7}', "{}",
         '{"user_id":"u","amount":1,"items":[{"sku":"A","quantity":"1"}]}',
         '{"user_id":"u","user_id":"v"}', "[]", "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
         "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
         "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"]
    return [x.encode() for x in s]


def seeds_users():
    s = ['{"email":"User@Example.com","password":"correct horse battery"}',
         '{"email":"a.b+c@sub.example.co","password":"12345678"}',
         '{"email":"user@example.com\\u0000x","password":"12345678"}',
         '{"email":"user@example.com","password":"short"}', '{"email":"no-at","password":"x"}',
         '{"email":"a@b","password":"12345678"}', '{"email":"a@@b.c"}', '{"password":"12345678"}',
         '{"email":7}', '{"email":"a@-b.c"}', '{"email":".a@b.c"}', '{"email":"a..b@c.d"}',
         '{"email":"%s@x.y"}' % ("a" * 65), '{"email":"a@%s.com"}' % ("b" * 64),
         '{"email":"u@example.com","password":"%s"}' % ("p" * 1025),
         '{"email":"u@example.com","password":"\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9"}',
         "user@example.com", "User@Example.COM", "a@b.c\x00d"]
    return [x.encode() for x in s]


def seeds_transactions():
    s = ['{"amount":100,"description":"transfer","fromUserId":"%s","toUserId":"u2"}' % UUID,
         '{"amount":100,"toUserId":"u2"}', '{"amount":100,"fromUserId":"u1","toUserId":null}',
         '{"amount":1000000000000000,"fromUserId":"a","toUserId":"A"}',
         '{"amount":1000000000000001,"toUserId":"u"}', '{"amount":0,"toUserId":"u"}',
         '{"amount":-5,"toUserId":"u"}', '{"amount":"100","toUserId":"u"}',
         '{"amount":1.5,"toUserId":"u"}', '{"amount":1,"description":"a\\u0000b","toUserId":"u"}',
         '{"amount":1,"description":7,"toUserId":"u"}', '{"amount":1,"toUserId":"u v"}',
         '{"amount":1,"toUserId":"%s"}' % ("x" * 65), '{"amount":1,"toUserId":"x\\u0000y"}',
         '{"amount":1,"description":"%s","toUserId":"u"}' % ("d" * 501), '{"amount":1}',
         '{"userId":"%s"}' % UUID, '{"userId":7}', UUID + "\n{}", "not-a-uuid"]
    return [x.encode() for x in s]


def seeds_cars():
    car = {"vin": "1HGCM82633A004352", "make": "Honda", "model": "Accord", "year": 2003,
           "price": 1250000}
    s = [json.dumps(car), json.dumps({"cars": [car, dict(car, vin="1M8GDM9AXKP042788")]}),
         json.dumps({"price": 999}), json.dumps(dict(car, vin="1hgcm82633a004352")),
         json.dumps(dict(car, vin="1HGCM82633A004353")), json.dumps(dict(car, vin="IHGCM82633A004352")),
         json.dumps(dict(car, make="   ")), '{"make":"a\\u0000b"}', '{"model":"a\\tb"}',
         json.dumps(dict(car, year=1885)), json.dumps(dict(car, price=0)),
         json.dumps(dict(car, id=UUID, version=3, created_at="x")), json.dumps(dict(car, color="red")),
         '{"vin":null,"make":"M"}', "{}", json.dumps(dict(car, make="m" * 65)),
         "toyota corolla 2020", "!!", "a" * 201, "caf\u00e9 \u4e2d", " ".join("w%d" % i for i in range(20))]
    out = [x.encode() for x in s]
    out += [b"\xff\xfe", b"toyota \xc3"]
    return out


def seeds_pizza():
    ok = {"flavor": "Pepperoni", "size": "Large", "quantity": 2, "price": 19.99,
          "address": "123 Main St", "user_name": "Alice"}
    s = [json.dumps(ok), json.dumps(dict(ok, size="extra large")),
         json.dumps(dict(ok, price=100000)), json.dumps(dict(ok, price=19.999)),
         json.dumps(dict(ok, price=0.1)), json.dumps(dict(ok, price=1e308)),
         json.dumps(dict(ok, quantity=0)), json.dumps(dict(ok, quantity=101)),
         json.dumps(dict(ok, flavor="a\nb")), '{"flavor":"a\\u0000b"}', json.dumps(dict(ok, size="Huge")),
         json.dumps(dict(ok, address="x" * 257)), "{}", "250ms", "2s", "1m", "0", "3600000",
         "3600001", "nan", "inf", "-1", "0.5", "1", "1.5", "1e-300", "0x10s", "nanms"]
    return [x.encode() for x in s]


ALL = {n[len("seeds_"):]: f for n, f in globals().items() if n.startswith("seeds_")}


def main():
    names = sys.argv[1:] or sorted(ALL)
    for name in names:
        d = os.path.join(HERE, "corpus", name)
        os.makedirs(d, exist_ok=True)
        for f in os.listdir(d):
            if f.startswith("seed-"):
                os.remove(os.path.join(d, f))
        for i, data in enumerate(ALL[name]()):
            with open(os.path.join(d, "seed-%03d" % i), "wb") as fp:
                fp.write(data)
        print("%s: %d seeds" % (name, len(ALL[name]())))


if __name__ == "__main__":
    main()
