//! Modbus RTU framing for polled devices: CRC-16/MODBUS, read requests, and response parsing
//! that says "need more bytes" (`Ok(None)`) instead of failing on a partial frame.
//!
//! The daemon owns the serial port and the timing (inter-frame gap, timeouts, retries); this
//! module only turns requests into bytes and bytes into registers or an exception.

/// CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF); sent low byte first.
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &byte in bytes {
        crc ^= u16::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xA001 } else { crc >> 1 };
        }
    }
    crc
}

/// Read holding (0x03) or input (0x04) registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFunction {
    Holding = 0x03,
    Input = 0x04,
}

/// A read request frame: slave, function, start address, register count, CRC.
pub fn read_request(slave: u8, function: ReadFunction, address: u16, count: u16) -> Vec<u8> {
    let mut frame = vec![slave, function as u8];
    frame.extend(address.to_be_bytes());
    frame.extend(count.to_be_bytes());
    frame.extend(crc16(&frame).to_le_bytes());
    frame
}

/// A read response frame (what a slave simulator sends).
pub fn read_response(slave: u8, function: ReadFunction, registers: &[u16]) -> Vec<u8> {
    let mut frame = vec![slave, function as u8, (registers.len() * 2) as u8];
    for register in registers {
        frame.extend(register.to_be_bytes());
    }
    frame.extend(crc16(&frame).to_le_bytes());
    frame
}

/// What a slave answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Registers(Vec<u16>),
    /// The slave refused: 1 illegal function, 2 illegal address, 3 illegal value, 4 failure…
    Exception(u8),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModbusError {
    #[error("CRC mismatch: frame says {received:04x}, computed {computed:04x}")]
    BadCrc { received: u16, computed: u16 },
    #[error("answer from slave {got}, expected {expected}")]
    WrongSlave { expected: u8, got: u8 },
    #[error("answer for function {got:#04x}, expected {expected:#04x}")]
    WrongFunction { expected: u8, got: u8 },
    #[error("{got} data bytes, expected {expected}")]
    WrongLength { expected: usize, got: usize },
}

/// Parses the answer to a read of `count` registers. `Ok(None)`: not all bytes are here yet.
pub fn parse_read_response(bytes: &[u8], slave: u8, function: ReadFunction, count: u16) -> Result<Option<Response>, ModbusError> {
    if bytes.len() < 5 {
        return Ok(None);
    }
    if bytes[0] != slave {
        return Err(ModbusError::WrongSlave { expected: slave, got: bytes[0] });
    }
    let code = function as u8;
    if bytes[1] == code | 0x80 {
        check_crc(&bytes[..5])?;
        return Ok(Some(Response::Exception(bytes[2])));
    }
    if bytes[1] != code {
        return Err(ModbusError::WrongFunction { expected: code, got: bytes[1] });
    }
    let expected = usize::from(count) * 2;
    if usize::from(bytes[2]) != expected {
        return Err(ModbusError::WrongLength { expected, got: usize::from(bytes[2]) });
    }
    let total = 3 + expected + 2;
    if bytes.len() < total {
        return Ok(None);
    }
    check_crc(&bytes[..total])?;
    let registers = bytes[3..3 + expected].chunks_exact(2).map(|pair| u16::from_be_bytes([pair[0], pair[1]])).collect();
    Ok(Some(Response::Registers(registers)))
}

fn check_crc(frame: &[u8]) -> Result<(), ModbusError> {
    let (body, tail) = frame.split_at(frame.len() - 2);
    let received = u16::from_le_bytes([tail[0], tail[1]]);
    let computed = crc16(body);
    if received == computed {
        Ok(())
    } else {
        Err(ModbusError::BadCrc { received, computed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex;
    use proptest::prelude::*;

    #[test]
    fn requests_match_the_domain_vectors() {
        assert_eq!(read_request(0x01, ReadFunction::Holding, 0x0000, 2), hex("01 03 00 00 00 02 C4 0B"));
        assert_eq!(read_request(0x50, ReadFunction::Holding, 0x003D, 3), hex("50 03 00 3D 00 03 99 86"));
    }

    #[test]
    fn sensecap_reply_gives_its_registers() {
        let reply = hex("01 03 04 09 92 02 D1 99 7E");
        assert_eq!(parse_read_response(&reply, 1, ReadFunction::Holding, 2), Ok(Some(Response::Registers(vec![0x0992, 0x02D1]))));
        assert_eq!(0x0992 as f64 / 100.0, 24.50);
        assert_eq!(0x02D1 as f64 / 100.0, 7.21);
    }

    #[test]
    fn exception_reply_is_reported() {
        assert_eq!(parse_read_response(&hex("01 83 02 C0 F1"), 1, ReadFunction::Holding, 2), Ok(Some(Response::Exception(2))));
    }

    #[test]
    fn partial_frames_ask_for_more_and_bad_ones_say_why() {
        let reply = hex("01 03 04 09 92 02 D1 99 7E");
        for cut in 0..reply.len() {
            assert_eq!(parse_read_response(&reply[..cut], 1, ReadFunction::Holding, 2), Ok(None), "{cut} bytes");
        }
        let mut bad = reply.clone();
        bad[4] ^= 1;
        assert!(matches!(parse_read_response(&bad, 1, ReadFunction::Holding, 2), Err(ModbusError::BadCrc { .. })));
        assert_eq!(parse_read_response(&reply, 2, ReadFunction::Holding, 2), Err(ModbusError::WrongSlave { expected: 2, got: 1 }));
        assert_eq!(parse_read_response(&reply, 1, ReadFunction::Holding, 3), Err(ModbusError::WrongLength { expected: 6, got: 4 }));
    }

    proptest! {
        #[test]
        fn responses_round_trip(slave in 1u8..=247, registers in proptest::collection::vec(any::<u16>(), 1..60)) {
            let frame = read_response(slave, ReadFunction::Input, &registers);
            prop_assert_eq!(parse_read_response(&frame, slave, ReadFunction::Input, registers.len() as u16), Ok(Some(Response::Registers(registers))));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), count in 0u16..130) {
            let _ = parse_read_response(&bytes, bytes.first().copied().unwrap_or(1), ReadFunction::Holding, count);
        }
    }
}
