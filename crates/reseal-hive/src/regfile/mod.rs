//! `.reg` files: parsing and writing (REGEDIT5 UTF-16LE/UTF-8 and REGEDIT4).
