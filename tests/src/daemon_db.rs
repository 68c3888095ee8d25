//! Reading a stopped daemon's database (`<root>/crius.redb`) directly, for crash tests that
//! check what reached the disk.

use std::path::Path;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

/// The database file under a daemon's root.
pub const DB_FILE: &str = "crius.redb";
const CONTAINERS: TableDefinition<&str, &[u8]> = TableDefinition::new("containers");
const LEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("image_leases");

/// The ids with a container record and those with an image lease, read from the database of a
/// daemon that is not running.
pub fn records_and_leases(root: &Path) -> (Vec<String>, Vec<String>) {
    let db = redb::Database::open(root.join(DB_FILE)).unwrap();
    let txn = db.begin_read().unwrap();
    let keys = |t: redb::ReadOnlyTable<&str, &[u8]>| -> Vec<String> {
        t.iter()
            .unwrap()
            .map(|e| e.unwrap().0.value().to_string())
            .collect()
    };
    (
        keys(txn.open_table(CONTAINERS).unwrap()),
        keys(txn.open_table(LEASES).unwrap()),
    )
}
