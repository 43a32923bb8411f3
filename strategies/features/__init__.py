"""Pure feature functions over the frame contract: liquidation map, funding, levels."""
