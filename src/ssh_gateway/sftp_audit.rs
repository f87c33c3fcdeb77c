//! Which SFTP operations reach the audit log, and how: file opens and closes (with the bytes read
//! and written through the handle), and every request that changes the file system. Reads,
//! writes, stats and directory listings are summarised by the close, not logged one by one.

use crate::audit::Event;
use crate::proto::ssh::sftp::SftpEvent;

/// The audit event for one SFTP packet, or None for packets that are not logged on their own.
pub(super) fn event(e: &SftpEvent) -> Option<Event> {
    let ev = Event::new("ssh_sftp");
    Some(match e {
        SftpEvent::Open { path, flags, .. } => ev
            .str("op", "open")
            .str("path", path.clone())
            .bool("write", flags.modifies()),
        SftpEvent::Close {
            path,
            bytes_read,
            bytes_written,
            ..
        } => ev
            .str("op", "close")
            .opt_str("path", path.clone())
            .uint("bytes_read", *bytes_read)
            .uint("bytes_written", *bytes_written),
        SftpEvent::Opendir { path, .. } => ev.str("op", "opendir").str("path", path.clone()),
        SftpEvent::Setstat { path, .. } => ev.str("op", "setstat").str("path", path.clone()),
        SftpEvent::Fsetstat { path, .. } => ev.str("op", "fsetstat").opt_str("path", path.clone()),
        SftpEvent::Remove { path, .. } => ev.str("op", "remove").str("path", path.clone()),
        SftpEvent::Mkdir { path, .. } => ev.str("op", "mkdir").str("path", path.clone()),
        SftpEvent::Rmdir { path, .. } => ev.str("op", "rmdir").str("path", path.clone()),
        SftpEvent::Rename { old, new, .. } => ev
            .str("op", "rename")
            .str("path", old.clone())
            .str("new_path", new.clone()),
        SftpEvent::Symlink { target, link, .. } => ev
            .str("op", "symlink")
            .str("path", link.clone())
            .str("link_target", target.clone()),
        SftpEvent::Extended { name, paths, .. } => ev
            .str("op", "extended")
            .str("name", name.clone())
            .list("paths", paths.clone()),
        SftpEvent::UnknownRequest { kind, .. } => {
            ev.str("op", "unknown").uint("type", u64::from(*kind))
        }
        SftpEvent::Denied { id } => ev.str("op", "denied").uint("request", u64::from(*id)),
        _ => return None,
    })
}
