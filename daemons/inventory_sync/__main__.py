"""Wiring for `python -m daemons.inventory_sync`."""

from daemons.core.runtime import main
from daemons.inventory_sync.service import InventorySync, InventorySyncSettings

if __name__ == "__main__":
    main(InventorySync, InventorySyncSettings)
