"""Parquet in and out with the files pandas/pyarrow users have: a pyarrow
table (timestamps in nanoseconds, as pandas writes them) ingested with
`mlserve features ingest`, and a point-in-time training set written with
`mlserve features history --out train.parquet` read back by pyarrow."""

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq

from features_helpers import DEFINITIONS, MIN, T0, features_server
from test_features import cli


def ts(us):
    return dt.datetime.fromtimestamp(us / 1e6, tz=dt.timezone.utc)


def test_parquet_ingest_and_training_set(tmp_path):
    with features_server(tmp_path) as server:
        defs = tmp_path / "defs.toml"
        defs.write_text(DEFINITIONS)
        cli(server, "apply", defs)
        table = pa.table({
            "driver_id": pa.array([1, 1, 2], pa.int64()),
            "event_timestamp": pa.array([ts(T0), ts(T0 + 30 * MIN), ts(T0)], pa.timestamp("ns", tz="UTC")),
            "rate": pa.array([0.1, 0.3, None], pa.float64()),
            "trips": pa.array([1, 3, 5], pa.int64()),
        })
        data = tmp_path / "stats.parquet"
        pq.write_table(table, data)
        assert "ingested 3 rows" in cli(server, "ingest", "driver_stats", data)

        entities = tmp_path / "entities.csv"
        entities.write_text(f"driver_id,event_timestamp\n1,{T0 + 10 * MIN}\n1,{T0 + 31 * MIN}\n"
                            f"2,{T0 + MIN}\n3,{T0}\n")
        out = tmp_path / "train.parquet"
        assert "wrote 4 rows" in cli(server, "history", "--feature", "driver_stats:rate",
                                     "--feature", "driver_stats:trips", "--entities", entities,
                                     "--out", out)
        got = pq.read_table(out)
        assert got.schema.field("event_ts").type == pa.timestamp("us", tz="UTC")
        assert got.schema.field("driver_id").type == pa.int64()
        assert got.schema.field("driver_stats:rate").type == pa.float64()
        assert got.schema.field("driver_stats:trips").type == pa.int64()
        assert got.column("driver_id").to_pylist() == [1, 1, 2, 3]
        assert got.column("driver_stats:rate").to_pylist() == [0.1, 0.3, None, None]
        assert got.column("driver_stats:trips").to_pylist() == [1, 3, 5, None]
        assert got.column("event_ts").to_pylist()[0] == ts(T0 + 10 * MIN)
