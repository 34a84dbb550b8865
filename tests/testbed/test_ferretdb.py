"""tests/testbed/test_ferretdb.py: the MongoDB-wire server at MONGO_URI (FerretDB, SQLite)
serves what the tool's optional sink needs: insert_many, count_documents, find, aggregate."""

import pymongo

from conftest import unique


def test_ferretdb_serves_insert_many_count_find_and_aggregate(bed):
    client = pymongo.MongoClient(bed.mongo_uri, serverSelectionTimeoutMS=5000,
                                 socketTimeoutMS=10000)
    try:
        assert client.admin.command("ping")["ok"] == 1.0
        coll = client["testbed"][unique("coll")]
        docs = [{"seq": i, "topic": "t", "partition": i % 3} for i in range(500)]
        assert len(coll.insert_many(docs).inserted_ids) == 500
        assert coll.count_documents({}) == 500
        assert coll.count_documents({"partition": 1}) == 167
        assert [d["seq"] for d in coll.find({"seq": {"$lt": 3}}).sort("seq", 1)] == [0, 1, 2]
        grouped = {d["_id"]: d["n"] for d in coll.aggregate(
            [{"$group": {"_id": "$partition", "n": {"$sum": 1}}}])}
        assert grouped == {0: 167, 1: 167, 2: 166}
        coll.drop()
    finally:
        client.close()
