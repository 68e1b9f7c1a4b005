// Which participant is the avatar, by the rule LiveKit's own front ends use.
import { ParticipantKind, Track } from 'livekit-client';

export const PUBLISH_ON_BEHALF = 'lk.publish_on_behalf';

function publishesVideo(p) {
  return p.videoTrackPublications.size > 0;
}

// A remote avatar worker joins as its own participant with `lk.publish_on_behalf` naming the
// agent it speaks for: when there is one, it is the face. Otherwise the agent itself (kind
// AGENT, publishing on nobody's behalf) is the avatar once it publishes video (in-process mode).
export function pickAvatar(remoteParticipants) {
  const remotes = [...remoteParticipants];
  const agents = remotes.filter(
    (p) => p.kind === ParticipantKind.AGENT && !p.attributes[PUBLISH_ON_BEHALF],
  );
  const workers = remotes.filter((p) => p.attributes[PUBLISH_ON_BEHALF]);
  const agentIds = new Set(agents.map((a) => a.identity));
  const worker =
    workers.find((w) => agentIds.has(w.attributes[PUBLISH_ON_BEHALF])) ?? workers[0] ?? null;
  const agent =
    (worker && agents.find((a) => a.identity === worker.attributes[PUBLISH_ON_BEHALF])) ??
    agents.find(publishesVideo) ??
    agents[0] ??
    null;
  const avatar = worker ?? (agent && publishesVideo(agent) ? agent : null);
  return { agent, avatar };
}

export function trackOf(participant, source) {
  return participant?.getTrackPublication(source)?.track ?? null;
}

// The media to show: the avatar's camera, and its microphone, else the agent's (whichever
// of the two publishes the voice).
export function avatarMedia({ agent, avatar }) {
  return {
    video: trackOf(avatar, Track.Source.Camera),
    audio: trackOf(avatar, Track.Source.Microphone) ?? trackOf(agent, Track.Source.Microphone),
  };
}
