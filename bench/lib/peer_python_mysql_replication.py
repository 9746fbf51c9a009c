"""The decode peer: python-mysql-replication (PyPI `mysql-replication`) reading a binlog.

The library reads from a server as a replica, not from files, so it reads the benchmark's
binlog files from the throwaway MariaDB that wrote them: from the start of the first measured
file to the end of the last (`blocking=False`), keeping only row events and iterating every
row of every one (`for row in event.rows`), which is what makes the library decode the values.

Prints one JSON object: rows, row_events, wall_s, cpu_s (this process only; the server's
work of reading the file and sending it is on another core).

    python peer_python_mysql_replication.py --port PORT --log-file mysql-bin.000002
"""

import argparse
import json
import time

from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-file", required=True)
    parser.add_argument("--server-id", type=int, default=4207999)
    args = parser.parse_args()

    wall0, cpu0 = time.perf_counter(), time.process_time()
    stream = BinLogStreamReader(
        connection_settings={"host": "127.0.0.1", "port": args.port, "user": "root", "passwd": ""},
        server_id=args.server_id,
        blocking=False,
        resume_stream=True,
        log_file=args.log_file,
        log_pos=4,
        only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent],
    )
    rows = row_events = values = 0
    try:
        for event in stream:
            row_events += 1
            for row in event.rows:
                rows += 1
                # Touch the decoded values (an update row has before and after images).
                values += len(row.get("values") or row.get("after_values") or ())
    finally:
        stream.close()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    print(json.dumps({"rows": rows, "row_events": row_events, "values": values, "wall_s": wall, "cpu_s": cpu}))


if __name__ == "__main__":
    main()
