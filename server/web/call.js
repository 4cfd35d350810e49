// One 1:1 call at a time over WebRTC, signalled through the server's call:* relay.

const STATES = {
  calling: "Calling…",
  ringing: "Incoming call",
  connecting: "Connecting…",
  connected: "Connected",
  ended: "Call ended",
  failed: "Call failed",
};

export class CallController {
  constructor({ socket, api, ui }) {
    this.socket = socket;
    this.api = api;
    this.ui = ui;
    this.call = null;
  }

  get busy() {
    return this.call !== null;
  }

  async iceServers() {
    try {
      return (await this.api.iceServers()).iceServers;
    } catch {
      return [];
    }
  }

  async start(peer, withVideo) {
    if (this.call) return;
    const callId = `call-${crypto.randomUUID()}`;
    this.call = { callId, peer, withVideo, pc: null, stream: null, pendingIce: [], offer: null };
    this.ui.show(peer, STATES.calling, false);
    try {
      const pc = await this.connection();
      const offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
      await this.signal("call:offer", { sdp: { type: offer.type, sdp: offer.sdp } });
    } catch (error) {
      this.fail(error);
    }
  }

  async connection() {
    const call = this.call;
    const pc = new RTCPeerConnection({ iceServers: await this.iceServers() });
    call.pc = pc;
    call.stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: call.withVideo });
    for (const track of call.stream.getTracks()) pc.addTrack(track, call.stream);
    this.ui.localStream(call.stream);
    pc.addEventListener("track", (event) => this.ui.remoteStream(event.streams[0]));
    pc.addEventListener("icecandidate", (event) => {
      if (event.candidate) this.signal("call:ice", { candidate: event.candidate.toJSON() }).catch(() => {});
    });
    pc.addEventListener("connectionstatechange", () => {
      if (this.call?.pc !== pc) return;
      if (pc.connectionState === "connected") this.ui.state(STATES.connected);
      else if (pc.connectionState === "connecting") this.ui.state(STATES.connecting);
      else if (pc.connectionState === "failed") this.fail(new Error("the connection failed"));
    });
    return pc;
  }

  signal(type, extra) {
    const { callId, peer } = this.call;
    return this.socket.request(type, { callId, toUserId: peer.id, ...extra });
  }

  async accept() {
    const call = this.call;
    if (!call?.offer) return;
    this.ui.show(call.peer, STATES.connecting, false);
    try {
      const pc = await this.connection();
      await pc.setRemoteDescription(call.offer);
      await this.flushIce();
      const answer = await pc.createAnswer();
      await pc.setLocalDescription(answer);
      await this.signal("call:answer", { sdp: { type: answer.type, sdp: answer.sdp } });
    } catch (error) {
      this.fail(error);
    }
  }

  async flushIce() {
    const { pc, pendingIce } = this.call;
    while (pendingIce.length) await pc.addIceCandidate(pendingIce.shift());
  }

  hangup() {
    if (!this.call) return;
    this.signal("call:hangup", {}).catch(() => {});
    this.end(STATES.ended);
  }

  end(text) {
    const call = this.call;
    this.call = null;
    call?.pc?.close();
    for (const track of call?.stream?.getTracks() ?? []) track.stop();
    this.ui.state(text);
    this.ui.close();
  }

  fail(error) {
    console.warn("call failed:", error?.message ?? error);
    if (this.call) this.signal("call:hangup", {}).catch(() => {});
    this.end(STATES.failed);
  }

  /** A call:* event from the server. */
  async handle(type, data, peerLookup) {
    const call = this.call;
    if (type === "call:offer") {
      if (call) {
        // One call at a time: a second caller hears a hang-up.
        if (call.callId !== data.callId) {
          this.socket.request("call:hangup", { callId: data.callId, toUserId: data.fromUserId }).catch(() => {});
        }
        return;
      }
      const peer = await peerLookup(data.fromUserId);
      const withVideo = /m=video/.test(data.sdp?.sdp ?? "");
      this.call = { callId: data.callId, peer, withVideo, pc: null, stream: null, pendingIce: [], offer: data.sdp };
      this.ui.show(peer, STATES.ringing, true);
      return;
    }
    if (!call || call.callId !== data.callId || call.peer.id !== data.fromUserId) return;
    try {
      if (type === "call:answer" && call.pc) {
        await call.pc.setRemoteDescription(data.sdp);
        await this.flushIce();
        this.ui.state(STATES.connecting);
      } else if (type === "call:ice" && data.candidate) {
        if (call.pc?.remoteDescription) await call.pc.addIceCandidate(data.candidate);
        else call.pendingIce.push(data.candidate);
      } else if (type === "call:hangup") {
        this.end(STATES.ended);
      }
    } catch (error) {
      this.fail(error);
    }
  }
}
