"""3. The models behind one interface, and the table that picks one for each spec section."""
