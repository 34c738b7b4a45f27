"""What a call of each protocol looks like in a cassette, shared by capture and replay."""
