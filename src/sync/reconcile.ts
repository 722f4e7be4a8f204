/**
 * Telling drift from change after a full read.
 *
 * A full read (a reconcile, or the re-read after custom data named unknown friends) is applied on
 * top of the stored sequences. Rows it changes are ordinary news when Tencent's sequence for their
 * category moved since the last pull. When the sequence did NOT move, the sequences missed a change
 * (or the mirror was edited behind our back): that is drift, and the full read has just repaired it.
 */

/** Rows a full read repaired although the sequences covering them had not moved. */
export interface Drift {
  /** `tim.friends` rows inserted, updated or deleted (standard sequence unchanged). */
  friendRows: number;
  /** `tim.friend_tags` rows inserted, updated or deleted (both sequences unchanged). */
  tagRows: number;
}

/**
 * The drift in an applied full read, or undefined when there was none.
 *
 * Friend rows hold only standard data, so the standard sequence alone decides for them. Tag rows
 * mix both categories, and the apply counts them together, so they count as drift only when
 * neither sequence moved. A first read (no stored sequences) has nothing to drift from.
 */
export function driftOf(
  stored: { standardSequence: number | null; customSequence: number | null },
  pulled: { standardSequence: number; customSequence: number },
  written: { friendsWritten: number; tagsWritten: number },
): Drift | undefined {
  const standardSame =
    stored.standardSequence !== null && stored.standardSequence === pulled.standardSequence;
  const bothSame = standardSame && stored.customSequence === pulled.customSequence;
  const drift: Drift = {
    friendRows: standardSame ? written.friendsWritten : 0,
    tagRows: bothSame ? written.tagsWritten : 0,
  };
  return drift.friendRows + drift.tagRows > 0 ? drift : undefined;
}
